"""The JSON API for scripts: upload, status, webhooks and health."""
from flask import Blueprint

bp = Blueprint("api", __name__)

from . import docs, errors, routes, webhooks  # noqa: E402,F401  (register handlers and routes on bp)

"""The pages people use: upload, live progress, recent requests, webhook endpoints."""
from flask import Blueprint

bp = Blueprint("web", __name__)

from . import routes  # noqa: E402,F401  (register routes on bp)

"""The API's blueprint, on its own so its route modules import it and not the package that loads them."""

from flask import Blueprint

bp = Blueprint("api", __name__)

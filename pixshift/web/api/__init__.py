"""The JSON API for scripts: upload, status, webhooks and health."""

from pixshift.web.api import docs, routes, webhooks  # noqa: F401  (their routes register on bp)
from pixshift.web.api.blueprint import bp

__all__ = ["bp"]

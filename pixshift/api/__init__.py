"""The JSON API for scripts: upload, status, webhooks and health."""

from . import docs, routes, webhooks  # noqa: F401  (their routes register on bp)
from .blueprint import bp

__all__ = ["bp"]

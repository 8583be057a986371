"""The pages people use: upload, live progress, recent requests, webhook endpoints."""

from pixshift.web.pages.routes import bp

__all__ = ["bp"]

"""The pages people use: upload, live progress, recent requests, webhook endpoints."""

from .routes import bp

__all__ = ["bp"]

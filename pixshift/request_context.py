"""What every blueprint reads from the HTTP request the same way: where the client reached us, and
the rules an upload is held to. Blueprints import this, never each other."""
from __future__ import annotations

from flask import current_app, request

from .csv_input import Limits


def public_base() -> str:
    """Where clients reach us: PUBLIC_BASE_URL, or the URL this client used."""
    return current_app.config["PUBLIC_BASE_URL"] or request.url_root.rstrip("/")


def upload_limits() -> Limits:
    c = current_app.config
    return Limits(max_rows=c["MAX_ROWS"], max_images=c["MAX_IMAGES_PER_REQUEST"], max_urls_per_row=c["MAX_URLS_PER_ROW"])


def allow_private_urls() -> bool:
    return current_app.extensions["pixshift"].fetch_policy.allow_private

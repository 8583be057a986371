"""What every blueprint reads from the HTTP request the same way: where the client reached us, and
the rules an upload is held to. Blueprints import this, never each other."""

from __future__ import annotations

import typing as t

from flask import Request, current_app, request
from werkzeug.exceptions import HTTPException

from pixshift.uploads.csv_input import Limits


def public_base() -> str:
    """Where clients reach us: PUBLIC_BASE_URL, or the URL this client used."""
    return current_app.config["PUBLIC_BASE_URL"] or request.url_root.rstrip("/")


def upload_limits() -> Limits:
    c = current_app.config
    return Limits(
        max_rows=c["MAX_ROWS"], max_images=c["MAX_IMAGES_PER_REQUEST"], max_urls_per_row=c["MAX_URLS_PER_ROW"]
    )


def allow_private_urls() -> bool:
    return current_app.extensions["pixshift"].fetch_policy.allow_private


# Unread request bodies up to this size are read to the end before the connection is reused.
_DRAIN_LIMIT = 1 << 20


class UploadClosingRequest(Request):
    """Flask's request, closing every file Werkzeug's form parser opened for an upload. Werkzeug closes
    ``request.files`` at the end of a request, but a body that fails mid-file (a chunked upload cut
    off at MAX_CONTENT_LENGTH) makes the parser drop the spooled file it was writing, unclosed: it
    stayed open (in memory, or a temporary file past 500 kB) until the garbage collector found it.

    It also reads to the end a small body the app did not read (a 400 or 405 answered before the
    view looked at it): gunicorn answers such a request with keep-alive, and the client's next
    request on that connection was then lost at times (a requests Session posting a body without a
    Content-Type to /api/webhooks, then a GET: 23 of 60 GETs failed with RemoteDisconnected; none
    once drained). A larger unread body is left, and its connection may end after the answer."""

    def _get_file_stream(self, *args: t.Any, **kwargs: t.Any) -> t.IO[bytes]:
        stream = super()._get_file_stream(*args, **kwargs)
        self.__dict__.setdefault("_upload_streams", []).append(stream)
        return stream

    def close(self) -> None:
        try:
            _drain(self)
            super().close()
        finally:
            for stream in self.__dict__.pop("_upload_streams", ()):
                stream.close()


def _drain(req: Request) -> None:
    if req.content_length is not None and req.content_length > _DRAIN_LIMIT:
        return
    left = _DRAIN_LIMIT
    try:
        while left > 0 and (chunk := req.stream.read(min(65536, left))):
            left -= len(chunk)
    except (OSError, HTTPException):  # the client went away, or the body broke a limit: nothing to keep
        pass

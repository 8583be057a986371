"""Every HTTP call gets an id: ``X-Request-ID`` on the response (the caller's, if it sent a sane one,
else a new one), bound to the log context while the call is served; and ``wsgi.errors`` writes
become log records."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable

from flask import Flask, g, request

from pixshift.logs import bind, unbind

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class ErrorsToLog:
    """``wsgi.errors`` that turns each write into whole log records in the configured format.

    Servers hand the app their stderr as ``wsgi.errors``, and libraries write there without a
    newline (eventlet's WebSocket: "socket shutdown error: [Errno 9] Bad file descriptor"): the next
    log line of the process was glued onto that text, and a JSON record no longer parsed."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self._logger.warning("%s", line.rstrip())
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


def errors_to_log(inner: WsgiApp) -> WsgiApp:
    """``inner`` with ``wsgi.errors`` writing log records (ErrorsToLog)."""
    errors = ErrorsToLog(logging.getLogger("pixshift.wsgi"))

    def wsgi_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        environ["wsgi.errors"] = errors
        return inner(environ, start_response)

    return wsgi_app


def init_app(app: Flask) -> None:
    # Outermost, around Socket.IO's middleware too: its WebSocket transport never reaches Flask.
    app.wsgi_app = errors_to_log(app.wsgi_app)  # type: ignore[method-assign,assignment]

    @app.before_request
    def _assign_request_id():
        incoming = request.headers.get("X-Request-ID", "")
        g.http_request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        g.log_token = bind(http_request_id=g.http_request_id)

    @app.after_request
    def _return_request_id(response):
        if "http_request_id" in g:
            response.headers["X-Request-ID"] = g.http_request_id
        return response

    @app.teardown_request
    def _forget(_exc):
        token = g.pop("log_token", None)
        if token is not None:
            try:
                unbind(token)
            except ValueError:  # reset from another context (streamed responses): nothing to undo
                pass

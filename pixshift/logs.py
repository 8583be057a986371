"""Log lines that say which HTTP call, request and image they belong to; JSON when configured.

Every HTTP response carries ``X-Request-ID`` (the caller's, if it sent a sane one, else a new
one); each log line written while serving it, or while a task works on an image, carries the
ids in context, so one grep follows an image from upload to webhook.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Mapping
from types import MappingProxyType

from flask import Flask, g, request

# The default is an empty mapping that is never changed: bind() builds a new dict each time.
_context: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "pixshift_log_context", default=MappingProxyType({})
)
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
FIELDS = ("http_request_id", "request_id", "image_id")


def bind(**ids) -> contextvars.Token:
    """Add ids to the log context of the current thread or task; pass the token to ``unbind``."""
    return _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})


def unbind(token: contextvars.Token) -> None:
    _context.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for field in FIELDS:
            setattr(record, field, context.get(field, getattr(record, field, None)))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({f: getattr(record, f) for f in FIELDS if getattr(record, f, None) is not None})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{f}={getattr(record, f)}" for f in FIELDS if getattr(record, f, None) is not None)
        return f"{line} [{ids}]" if ids else line


def configure(fmt: str = "text", level: str = "INFO") -> None:
    """Set up the root logger once per process (``python -m pixshift``, gunicorn, consumers)."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def init_app(app: Flask) -> None:
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

"""Log lines that say which HTTP call, request and image they belong to; JSON when configured.

Each log line written while serving an HTTP call (``pixshift.web.request_ids`` binds its id), or
while a task works on an image, carries the ids in context, so one grep follows an image from
upload to webhook. Every line a process writes is one record in the configured format.

Nothing here imports Flask: gunicorn.conf.py loads this module in the arbiter, before the eventlet
worker patches the standard library, and eventlet's patching trips over Flask's context proxies.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Mapping
from types import MappingProxyType

from gunicorn import glogging

# The default is an empty mapping that is never changed: bind() builds a new dict each time.
_context: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "pixshift_log_context", default=MappingProxyType({})
)
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
    logging.captureWarnings(True)  # a warning is a record too, not lines of its own on stderr


class GunicornLogger(glogging.Logger):
    """gunicorn's own lines and its access log through the handler ``configure`` set up.

    Kept here, away from the app's imports: gunicorn.conf.py loads it in the arbiter, before the
    eventlet worker patches the standard library (urllib3 imported earlier breaks its SSL)."""

    def setup(self, cfg: object) -> None:
        self.loglevel = self.LOG_LEVELS.get(getattr(cfg, "loglevel", "info").lower(), logging.INFO)
        self.error_log.setLevel(self.loglevel)
        self.error_log.propagate = True
        self.access_log.propagate = True

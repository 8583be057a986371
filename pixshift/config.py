"""All of PixShift's settings, read from environment variables in this one place and checked once.

Every setting is documented in README.md's configuration table. Nothing else in the server
reads ``os.environ`` (the ``pixshift`` CLI, a client, reads its own ``PIXSHIFT_SERVER`` and
``PIXSHIFT_TOKEN``; boto3 reads the standard ``AWS_*`` credentials). ``Config()`` refuses a value
it cannot use (``ConfigError`` naming every bad variable), so a process with a bad setting does
not start, instead of failing every image later.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, overload

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Defaults that services take too when called without settings (tests, the benchmark).
COMPRESSION_RATIO = 0.5
MIN_QUALITY = 30
MAX_QUALITY = 100
THUMBNAIL_SIZE = 256
MAX_IMAGE_PIXELS = 50_000_000
MAX_RETRY_AFTER = 300.0
JPEG_ENCODERS = ("libjpeg-turbo", "mozjpeg")  # pixshift.imaging.compress implements each
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MEDIA_DELIVERIES = ("proxy", "presigned", "public")


class ConfigError(ValueError):
    """One or more settings cannot be used; the message names each variable and what it accepts."""


@overload
def _env(name: str, default: str) -> str: ...
@overload
def _env(name: str, default: None = None) -> str | None: ...
def _env(name: str, default: str | None = None) -> str | None:
    """The variable's value; unset and empty both mean the default."""
    value = os.environ.get(name)
    return value if value else default


_problems: list[str] = []  # filled while a Config is read, under _reading
_reading = threading.Lock()


def _number(kind: type[int] | type[float], name: str, default: float, low: float | None, high: float | None):
    raw = _env(name)
    try:
        value = kind(raw) if raw is not None else kind(default)
    except ValueError:
        _problems.append(f"{name}={raw!r} is not a{'n integer' if kind is int else ' number'}")
        return kind(default)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low} to {high}" if low is not None and high is not None else f"at least {low}"
        _problems.append(f"{name}={raw} must be {bounds}")
    return value


def _int(name: str, default: int, low: int | None = None, high: int | None = None) -> int:
    return int(_number(int, name, default, low, high))


def _float(name: str, default: float, low: float | None = None, high: float | None = None) -> float:
    return float(_number(float, name, default, low, high))


def _seconds(name: str, default: str) -> tuple[float, ...]:
    raw = _env(name, default)
    try:
        return tuple(float(x) for x in raw.split(","))
    except ValueError:
        _problems.append(f"{name}={raw!r} must be seconds separated by commas")
        return tuple(float(x) for x in default.split(","))


def check(settings: Mapping[str, Any], problems: Iterable[str] = ()) -> None:
    """Raise ConfigError naming every setting that cannot be used: ``problems`` found while reading,
    values outside their choices, and settings that contradict each other. create_app checks the
    app's final config again (tests and embedders pass values directly)."""
    found = list(problems)
    choices = {
        "JPEG_ENCODER": ("PIXSHIFT_JPEG_ENCODER", JPEG_ENCODERS),
        "MEDIA_DELIVERY": ("PIXSHIFT_MEDIA_DELIVERY", MEDIA_DELIVERIES),
        "LOG_FORMAT": ("PIXSHIFT_LOG_FORMAT", LOG_FORMATS),
        "LOG_LEVEL": ("PIXSHIFT_LOG_LEVEL", LOG_LEVELS),
    }
    for key, (name, allowed) in choices.items():
        if settings[key] not in allowed:
            found.append(f"{name}={settings[key]!r} must be one of {', '.join(allowed)}")
    if settings["MIN_QUALITY"] > settings["MAX_QUALITY"]:
        found.append("PIXSHIFT_MIN_QUALITY must not be above PIXSHIFT_MAX_QUALITY")
    if settings["MEDIA_DELIVERY"] == "public" and not settings["MEDIA_PUBLIC_BASE_URL"]:
        found.append("PIXSHIFT_MEDIA_DELIVERY=public needs PIXSHIFT_MEDIA_PUBLIC_BASE_URL")
    schedule = settings["WEBHOOK_RETRY_SCHEDULE"]
    if not schedule or min(schedule) < 0:
        found.append("PIXSHIFT_WEBHOOK_RETRY_SCHEDULE must be seconds, at least one, none negative")
    if found:
        raise ConfigError("; ".join(found))


def _bool(name: str, default: bool = False) -> bool:
    return (_env(name, "1" if default else "0") or "").strip().lower() in ("1", "true", "yes", "on")


class Config:
    """Settings for one process; build a fresh one to re-read the environment."""

    def __init__(self) -> None:
        with _reading:  # one reader at a time: apps built in threads (tests) must not mix their problems
            _problems.clear()
            self._read()
            problems = list(_problems)
        check(self.as_flask_config(), problems)

    def _read(self) -> None:
        # Where the embedded default keeps its SQLite files and media.
        self.INSTANCE_PATH = Path(_env("PIXSHIFT_INSTANCE_PATH", str(PROJECT_ROOT / "instance"))).resolve()

        self.HOST = _env("HOST", "127.0.0.1")
        self.PORT = _int("PORT", 5000, 0, 65535)
        # Base of the URLs PixShift hands out (output images, CSVs); unset: the URL the client used.
        self.PUBLIC_BASE_URL = (_env("PUBLIC_BASE_URL") or "").rstrip("/") or None

        self.SQLALCHEMY_DATABASE_URI = _database_url(
            _env("DATABASE_URL", f"sqlite:///{self.INSTANCE_PATH / 'pixshift.db'}")
        )
        self.REDIS_URL = _env("REDIS_URL")
        self.MEDIA_ROOT = Path(_env("MEDIA_ROOT", str(self.INSTANCE_PATH / "media"))).resolve()
        # Object storage instead of MEDIA_ROOT: s3://bucket/prefix (credentials: the usual AWS_* variables).
        self.MEDIA_URL = _env("PIXSHIFT_MEDIA_URL")
        self.S3_ENDPOINT_URL = _env("PIXSHIFT_S3_ENDPOINT_URL")  # an S3-compatible server; unset: AWS
        # How output URLs reach the bytes: "proxy" (PixShift streams them), "presigned" (PixShift
        # redirects to a presigned URL of the bucket) or "public" (URLs point at MEDIA_PUBLIC_BASE_URL).
        self.MEDIA_DELIVERY = _env("PIXSHIFT_MEDIA_DELIVERY", "proxy")
        self.MEDIA_PUBLIC_BASE_URL = (_env("PIXSHIFT_MEDIA_PUBLIC_BASE_URL") or "").rstrip("/") or None
        self.PRESIGN_SECONDS = _int("PIXSHIFT_PRESIGN_SECONDS", 3600, 1)
        # Name of the Huey queue and prefix of the event channels: lets deployments share a Redis.
        self.QUEUE_NAME = _env("PIXSHIFT_QUEUE_NAME", "pixshift")
        self.SECRET_KEY = _env("PIXSHIFT_SECRET_KEY")

        # Request threads of python -m pixshift's server (gunicorn gthread): requests handled at once.
        # Each open Socket.IO connection (a browser on a request page, pixshift upload --wait) holds one.
        self.WEB_THREADS = _int("PIXSHIFT_WEB_THREADS", 100, 1)

        # Workers.
        self.INPROCESS_WORKERS = _int("PIXSHIFT_INPROCESS_WORKERS", 16, 0)
        self.CPU_SLOTS = _int("PIXSHIFT_CPU_SLOTS", os.cpu_count() or 1, 1)
        # Worker threads lower their own priority by this much (nice; 0 keeps it): a web server on
        # the same machine, or in the same process on the embedded default, answers first.
        self.WORKER_NICE = _int("PIXSHIFT_WORKER_NICE", 10, 0, 19)
        self.MAX_ATTEMPTS = _int("PIXSHIFT_MAX_ATTEMPTS", 3, 1)
        self.RETRY_DELAY = _float("PIXSHIFT_RETRY_DELAY", 30.0, 0)
        self.LEASE_SECONDS = _int("PIXSHIFT_LEASE_SECONDS", 300, 1)
        # How often each consumer sweeps for work that dead workers or lost tasks left behind.
        self.SWEEP_SECONDS = _int("PIXSHIFT_SWEEP_SECONDS", 60, 1)

        # Compression.
        self.COMPRESSION_RATIO = _float("PIXSHIFT_COMPRESSION_RATIO", COMPRESSION_RATIO, 0.01, 0.99)
        self.MIN_QUALITY = _int("PIXSHIFT_MIN_QUALITY", MIN_QUALITY, 1, 100)
        self.MAX_QUALITY = _int("PIXSHIFT_MAX_QUALITY", MAX_QUALITY, 1, 100)  # spend the whole budget
        self.THUMBNAIL_SIZE = _int("PIXSHIFT_THUMBNAIL_SIZE", THUMBNAIL_SIZE, 16, 4096)
        # "libjpeg-turbo" (Pillow's, with MozJPEG's quantization table and optimized Huffman tables) or
        # "mozjpeg" (libvips' MozJPEG with trellis quantization: a higher look for several times the
        # CPU per JPEG; needs the pyvips extra). bench/README.md has the figures of both.
        self.JPEG_ENCODER = _env("PIXSHIFT_JPEG_ENCODER", JPEG_ENCODERS[0])
        # CPU time one image may cost its compression child (decode, search, encodes) before the child
        # is killed and the image fails too_costly; 0: no limit. Several times the slowest legitimate
        # image at the pixel cap (docs/design.md, section 6, has the measurements).
        self.IMAGE_CPU_SECONDS = _float("PIXSHIFT_IMAGE_CPU_SECONDS", 300.0, 0)
        # Remember what each URL gave (validators and result, per owner and compression settings), so a
        # later request revalidates with a conditional GET and reuses an unchanged image's result.
        self.REUSE_RESULTS = _bool("PIXSHIFT_REUSE_RESULTS", True)

        # Limits on input.
        self.MAX_CONTENT_LENGTH = _int("PIXSHIFT_MAX_CSV_BYTES", 32 * 1024 * 1024, 1)
        self.MAX_ROWS = _int("PIXSHIFT_MAX_ROWS", 100_000, 1)
        self.MAX_IMAGES_PER_REQUEST = _int("PIXSHIFT_MAX_IMAGES_PER_REQUEST", 200_000, 1)
        self.MAX_URLS_PER_ROW = _int("PIXSHIFT_MAX_URLS_PER_ROW", 100, 1)
        self.MAX_IMAGE_BYTES = _int("PIXSHIFT_MAX_IMAGE_BYTES", 25 * 1024 * 1024, 1)
        self.MAX_IMAGE_PIXELS = _int("PIXSHIFT_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS, 1)

        # Downloads.
        self.ALLOW_PRIVATE_URLS = _bool("PIXSHIFT_ALLOW_PRIVATE_URLS")
        self.CONNECT_TIMEOUT = _float("PIXSHIFT_CONNECT_TIMEOUT", 5.0, 0.001)
        self.READ_TIMEOUT = _float("PIXSHIFT_READ_TIMEOUT", 15.0, 0.001)
        self.DOWNLOAD_TIMEOUT = _float("PIXSHIFT_DOWNLOAD_TIMEOUT", 60.0, 0.001)
        self.DOWNLOAD_RETRIES = _int("PIXSHIFT_DOWNLOAD_RETRIES", 3, 0)
        self.DOWNLOAD_BACKOFF = _float("PIXSHIFT_DOWNLOAD_BACKOFF", 0.5, 0)
        # Downloads from one host at once, across all processes; a stalled host holds no more threads.
        self.HOST_CONCURRENCY = _int("PIXSHIFT_HOST_CONCURRENCY", 8, 1)
        # Image tasks of one request waiting in the queue at once: a new request's first images wait
        # behind at most this many of each running request (pixshift.pipeline.windows).
        self.REQUEST_WINDOW = _int("PIXSHIFT_REQUEST_WINDOW", 64, 1)
        # The longest a host's Retry-After (on 429 or 503) pauses it; the image is retried then.
        self.MAX_RETRY_AFTER = _float("PIXSHIFT_MAX_RETRY_AFTER", MAX_RETRY_AFTER, 0)

        # Access: with tokens set, the API requires one and each request is visible only to its token.
        self.API_TOKENS = tuple(t.strip() for t in (_env("PIXSHIFT_API_TOKENS") or "").split(",") if t.strip())

        # Webhooks.
        self.WEBHOOK_SECRET = _env("PIXSHIFT_WEBHOOK_SECRET")
        self.WEBHOOK_TIMEOUT = _float("PIXSHIFT_WEBHOOK_TIMEOUT", 10.0, 0.001)
        # Seconds between attempts (Standard Webhooks' schedule): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
        self.WEBHOOK_RETRY_SCHEDULE = _seconds("PIXSHIFT_WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,36000")

        self.STATUS_PAGE_SIZE = _int("PIXSHIFT_STATUS_PAGE_SIZE", 100, 1, 500)
        # How long a rendered status page of an unfinished request may be served again (0: never).
        self.STATUS_CACHE_SECONDS = _float("PIXSHIFT_STATUS_CACHE_SECONDS", 1.0, 0)

        # Logging: "text" or "json" lines, each tagged with the HTTP call, request and image ids.
        self.LOG_FORMAT = _env("PIXSHIFT_LOG_FORMAT", "text")
        self.LOG_LEVEL = _env("PIXSHIFT_LOG_LEVEL", "INFO").upper()

    def as_flask_config(self) -> dict:
        return {k: getattr(self, k) for k in dir(self) if k.isupper()}


@functools.cache
def settings() -> Config:
    """This process's settings, read and checked once: what the Huey instance, gunicorn.conf.py and
    ``python -m pixshift`` start from (``create_app`` reads a fresh Config, so tests can vary it)."""
    return Config()


def engine_options(url: str, threads: int) -> dict:
    """SQLAlchemy engine options for a process in which ``threads`` threads may use the database at once."""
    if url.startswith("sqlite"):
        # Many worker threads write: wait for the lock instead of failing at once. A connection for
        # every thread that may want one: SQLAlchemy's default pool (5 + 10) made request threads
        # wait for one while uploads and worker threads held them (each waiting for SQLite's write
        # lock), and opened and closed a connection (with its PRAGMAs) per request beyond 5.
        # Connections are opened only when first needed, and an idle one costs little.
        return {"connect_args": {"timeout": 30, "check_same_thread": False}, "pool_size": threads, "max_overflow": 10}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}


def _database_url(url: str) -> str:
    """Route plain postgres URLs to psycopg 3, the driver PixShift ships with."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url

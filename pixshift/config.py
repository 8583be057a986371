"""All of PixShift's settings, read from environment variables in this one place.

Every setting is documented in README.md's configuration table. Nothing else in the server
reads ``os.environ`` (the ``pixshift`` CLI, a client, reads its own ``PIXSHIFT_SERVER`` and
``PIXSHIFT_TOKEN``; boto3 reads the standard ``AWS_*`` credentials).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import overload

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@overload
def _env(name: str, default: str) -> str: ...
@overload
def _env(name: str, default: None = None) -> str | None: ...
def _env(name: str, default: str | None = None) -> str | None:
    """The variable's value; unset and empty both mean the default."""
    value = os.environ.get(name)
    return value if value else default


def _int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


def _float(name: str, default: float) -> float:
    return float(_env(name, str(default)))


def _bool(name: str, default: bool = False) -> bool:
    return (_env(name, "1" if default else "0") or "").strip().lower() in ("1", "true", "yes", "on")


class Config:
    """Settings for one process; build a fresh one to re-read the environment."""

    def __init__(self) -> None:
        # Where the embedded default keeps its SQLite files and media.
        self.INSTANCE_PATH = Path(_env("PIXSHIFT_INSTANCE_PATH", str(PROJECT_ROOT / "instance"))).resolve()

        self.HOST = _env("HOST", "127.0.0.1")
        self.PORT = _int("PORT", 5000)
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
        self.PRESIGN_SECONDS = _int("PIXSHIFT_PRESIGN_SECONDS", 3600)
        # Name of the Huey queue and prefix of the event channels: lets deployments share a Redis.
        self.QUEUE_NAME = _env("PIXSHIFT_QUEUE_NAME", "pixshift")
        self.SECRET_KEY = _env("PIXSHIFT_SECRET_KEY")

        # Request threads of python -m pixshift's server (gunicorn gthread): requests handled at once.
        # Each open Socket.IO connection (a browser on a request page, pixshift upload --wait) holds one.
        self.WEB_THREADS = _int("PIXSHIFT_WEB_THREADS", 100)

        # Workers.
        self.INPROCESS_WORKERS = _int("PIXSHIFT_INPROCESS_WORKERS", 16)
        self.CPU_SLOTS = _int("PIXSHIFT_CPU_SLOTS", os.cpu_count() or 1)
        # Worker threads lower their own priority by this much (nice; 0 keeps it): a web server on
        # the same machine, or in the same process on the embedded default, answers first.
        self.WORKER_NICE = _int("PIXSHIFT_WORKER_NICE", 10)
        self.MAX_ATTEMPTS = _int("PIXSHIFT_MAX_ATTEMPTS", 3)
        self.RETRY_DELAY = _float("PIXSHIFT_RETRY_DELAY", 30.0)
        self.LEASE_SECONDS = _int("PIXSHIFT_LEASE_SECONDS", 300)
        # How often each consumer sweeps for work that dead workers or lost tasks left behind.
        self.SWEEP_SECONDS = _int("PIXSHIFT_SWEEP_SECONDS", 60)

        # Compression.
        self.COMPRESSION_RATIO = _float("PIXSHIFT_COMPRESSION_RATIO", 0.5)
        self.MIN_QUALITY = _int("PIXSHIFT_MIN_QUALITY", 30)
        self.MAX_QUALITY = _int("PIXSHIFT_MAX_QUALITY", 100)  # spend the budget: q95 left PNGs at 0.2 of it
        self.THUMBNAIL_SIZE = _int("PIXSHIFT_THUMBNAIL_SIZE", 256)
        # "libjpeg-turbo" (Pillow's, with MozJPEG's quantization table and optimized Huffman tables) or
        # "mozjpeg" (libvips' MozJPEG with trellis quantization: a higher look for about 5x the CPU per
        # JPEG; needs the pyvips extra). bench/look.py measures both.
        self.JPEG_ENCODER = _env("PIXSHIFT_JPEG_ENCODER", "libjpeg-turbo")
        # CPU time one image may cost its compression child (decode, search, encodes) before the child
        # is killed and the image fails too_costly; 0: no limit. compress_to_ratio's CPU time on the
        # worst legitimate images at the 50 MP cap, on the 2-core test machine: WebP with alpha 79-93 s
        # (6 full-size WebP encodes of ~15 s), WebP 22-59 s, PNG with alpha 16 s, PNG 1.1 s, JPEG
        # 2000 3.6 s, JPEG 0.8-1.2 s (progressive and CMYK included). 300 s is over 3x the worst, for
        # slower CPUs, a busy sibling core and a search that needs more encodes.
        self.IMAGE_CPU_SECONDS = _float("PIXSHIFT_IMAGE_CPU_SECONDS", 300.0)
        # Remember what each URL gave (validators and result, per owner and compression settings), so a
        # later request revalidates with a conditional GET and reuses an unchanged image's result.
        self.REUSE_RESULTS = _bool("PIXSHIFT_REUSE_RESULTS", True)

        # Limits on input.
        self.MAX_CONTENT_LENGTH = _int("PIXSHIFT_MAX_CSV_BYTES", 32 * 1024 * 1024)
        self.MAX_ROWS = _int("PIXSHIFT_MAX_ROWS", 100_000)
        self.MAX_IMAGES_PER_REQUEST = _int("PIXSHIFT_MAX_IMAGES_PER_REQUEST", 200_000)
        self.MAX_URLS_PER_ROW = _int("PIXSHIFT_MAX_URLS_PER_ROW", 100)
        self.MAX_IMAGE_BYTES = _int("PIXSHIFT_MAX_IMAGE_BYTES", 25 * 1024 * 1024)
        self.MAX_IMAGE_PIXELS = _int("PIXSHIFT_MAX_IMAGE_PIXELS", 50_000_000)

        # Downloads.
        self.ALLOW_PRIVATE_URLS = _bool("PIXSHIFT_ALLOW_PRIVATE_URLS")
        self.CONNECT_TIMEOUT = _float("PIXSHIFT_CONNECT_TIMEOUT", 5.0)
        self.READ_TIMEOUT = _float("PIXSHIFT_READ_TIMEOUT", 15.0)
        self.DOWNLOAD_TIMEOUT = _float("PIXSHIFT_DOWNLOAD_TIMEOUT", 60.0)
        self.DOWNLOAD_RETRIES = _int("PIXSHIFT_DOWNLOAD_RETRIES", 3)
        self.DOWNLOAD_BACKOFF = _float("PIXSHIFT_DOWNLOAD_BACKOFF", 0.5)
        # Downloads from one host at once, across all processes; a stalled host holds no more threads.
        self.HOST_CONCURRENCY = _int("PIXSHIFT_HOST_CONCURRENCY", 8)
        # Image tasks of one request waiting in the queue at once: a new request's first images wait
        # behind at most this many of each running request (pixshift.pipeline.windows).
        self.REQUEST_WINDOW = _int("PIXSHIFT_REQUEST_WINDOW", 64)
        # The longest a host's Retry-After (on 429 or 503) pauses it; the image is retried then.
        self.MAX_RETRY_AFTER = _float("PIXSHIFT_MAX_RETRY_AFTER", 300.0)

        # Access: with tokens set, the API requires one and each request is visible only to its token.
        self.API_TOKENS = tuple(t.strip() for t in (_env("PIXSHIFT_API_TOKENS") or "").split(",") if t.strip())

        # Webhooks.
        self.WEBHOOK_SECRET = _env("PIXSHIFT_WEBHOOK_SECRET")
        self.WEBHOOK_TIMEOUT = _float("PIXSHIFT_WEBHOOK_TIMEOUT", 10.0)
        # Seconds between attempts (Standard Webhooks' schedule): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
        self.WEBHOOK_RETRY_SCHEDULE = tuple(
            float(x)
            for x in (_env("PIXSHIFT_WEBHOOK_RETRY_SCHEDULE") or "5,300,1800,7200,18000,36000,36000").split(",")
        )

        self.STATUS_PAGE_SIZE = _int("PIXSHIFT_STATUS_PAGE_SIZE", 100)
        # How long a rendered status page of an unfinished request may be served again (0: never).
        self.STATUS_CACHE_SECONDS = _float("PIXSHIFT_STATUS_CACHE_SECONDS", 1.0)

        # Logging: "text" or "json" lines, each tagged with the HTTP call, request and image ids.
        self.LOG_FORMAT = _env("PIXSHIFT_LOG_FORMAT", "text")
        self.LOG_LEVEL = _env("PIXSHIFT_LOG_LEVEL", "INFO")

    def as_flask_config(self) -> dict:
        return {k: getattr(self, k) for k in dir(self) if k.isupper()}


def engine_options(url: str, threads: int) -> dict:
    """SQLAlchemy engine options for a process in which ``threads`` threads may use the database at once."""
    if url.startswith("sqlite"):
        # Many worker threads write: wait for the lock instead of failing at once. A connection for
        # every thread that may want one: SQLAlchemy's default pool (5 + 10) made request threads
        # wait for one while uploads and worker threads held them (each waiting for SQLite's write
        # lock), and opened and closed a connection (with its PRAGMAs) per request beyond 5.
        # Connections are opened only when first needed, and an idle one costs ~0.1 MB.
        return {"connect_args": {"timeout": 30, "check_same_thread": False}, "pool_size": threads, "max_overflow": 10}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}


def _database_url(url: str) -> str:
    """Route plain postgres URLs to psycopg 3, the driver PixShift ships with."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url

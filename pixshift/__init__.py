"""PixShift: upload a product CSV, get every image fetched, compressed to half its bytes and stored.

Importing the package is cheap on purpose: gunicorn's config and the CLI import ``pixshift.config``
or ``pixshift.cli`` before eventlet patches the standard library, so Flask, SQLAlchemy and the
rest load only in ``create_app``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: dict | None = None) -> Flask:
    """Build the web app; workers build it too, for the database and the runtime."""
    from flask import Flask

    from pixshift.db.extensions import db, migrate, socketio
    from pixshift.web.request_context import UploadClosingRequest

    from .config import PROJECT_ROOT, Config, check, engine_options

    config = Config()
    app = Flask(__name__, instance_path=str(config.INSTANCE_PATH))
    app.request_class = UploadClosingRequest  # closes an upload file even when its body fails mid-file
    app.config.from_mapping(config.as_flask_config())
    if test_config:
        app.config.update(test_config)
    # The request threads and the worker threads of python -m pixshift (plus its relay and scheduler).
    threads = app.config["WEB_THREADS"] + app.config["INPROCESS_WORKERS"] + 2
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(app.config["SQLALCHEMY_DATABASE_URI"], threads))
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _instance_secret(app)
    if not app.config["MEDIA_URL"]:
        app.config["MEDIA_ROOT"].mkdir(parents=True, exist_ok=True)
    check(app.config)
    from flask.json.provider import DefaultJSONProvider

    assert isinstance(app.json, DefaultJSONProvider)
    app.json.sort_keys = False  # documents read in the order they are written

    # Socket.IO handlers must be declared before the first init_app: Flask-SocketIO copies its
    # handler list into each new server, but handlers declared later reach only the current one.
    from pixshift.web import realtime  # noqa: F401

    db.init_app(app)
    # Batch mode lets Alembic change SQLite tables (it recreates them) as well as PostgreSQL's.
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"), render_as_batch=True)
    socketio.init_app(
        app,
        message_queue=app.config["REDIS_URL"],
        channel=f"{app.config['QUEUE_NAME']}:socketio",
        async_mode=app.config.get("ASYNC_MODE", "threading"),
    )
    app.extensions["pixshift"] = _runtime(app)

    from pixshift.web import api, downloads, errors, pages, request_ids, security

    request_ids.init_app(app)
    security.init_app(app)
    app.register_blueprint(errors.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(downloads.bp)
    app.register_blueprint(pages.bp)
    return app


def _runtime(app: Flask):
    import redis

    from pixshift.net.fetch import FetchPolicy
    from pixshift.net.host_slots import HostGate, HostSlots, RedisHostSlots
    from pixshift.pipeline.processing import Runtime
    from pixshift.webhooks.delivery import WebhookSettings

    from .events import make_bus
    from .storage import make_store

    c = app.config
    # Scale-out: the cap and the pauses live in Redis, for every consumer at once. A slot outlives
    # no download (DOWNLOAD_TIMEOUT bounds one), so a dead process's slots come back after that.
    host_slots: HostGate
    if c["REDIS_URL"]:
        host_slots = RedisHostSlots(
            redis.Redis.from_url(c["REDIS_URL"]),
            c["QUEUE_NAME"],
            c["HOST_CONCURRENCY"],
            lease_seconds=c["DOWNLOAD_TIMEOUT"] + 15,
            max_pause=c["MAX_RETRY_AFTER"],
        )
    else:
        host_slots = HostSlots(c["HOST_CONCURRENCY"], max_pause=c["MAX_RETRY_AFTER"])
    return Runtime(
        store=make_store(c["MEDIA_URL"], c["MEDIA_ROOT"], c["S3_ENDPOINT_URL"]),
        bus=make_bus(c["REDIS_URL"], c["QUEUE_NAME"]),
        fetch_policy=FetchPolicy.from_config(c),
        ratio=c["COMPRESSION_RATIO"],
        min_quality=c["MIN_QUALITY"],
        max_quality=c["MAX_QUALITY"],
        max_pixels=c["MAX_IMAGE_PIXELS"],
        thumbnail_size=c["THUMBNAIL_SIZE"],
        jpeg_encoder=c["JPEG_ENCODER"],
        lease_seconds=c["LEASE_SECONDS"],
        max_attempts=c["MAX_ATTEMPTS"],
        retry_delay=c["RETRY_DELAY"],
        cpu_slots=c["CPU_SLOTS"],
        host_slots=host_slots,
        image_cpu_seconds=c["IMAGE_CPU_SECONDS"],
        request_window=c["REQUEST_WINDOW"],
        reuse_results=c["REUSE_RESULTS"],
        webhooks=WebhookSettings(
            secret=c["WEBHOOK_SECRET"], timeout=c["WEBHOOK_TIMEOUT"], schedule=c["WEBHOOK_RETRY_SCHEDULE"]
        ),
        base_url=c["PUBLIC_BASE_URL"] or f"http://{_reachable(c['HOST'])}:{c['PORT']}",
    )


def _reachable(host: str) -> str:
    """A host for links when we listen on every interface (0.0.0.0 is not an address to visit)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _instance_secret(app: Flask) -> str:
    """A per-installation secret kept in the instance folder, so sessions survive restarts."""
    path = app.config["INSTANCE_PATH"] / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()

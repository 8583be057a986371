"""Shared fixtures: a local image server, an isolated instance folder, and live PixShift servers.

Tests never touch the internet. The database and queue a test uses are decided here, not
by whatever the shell had set: ``DATABASE_URL`` and ``REDIS_URL`` from the environment are
the PostgreSQL and Redis to run the scale-out variants against. They move to ``TEST_DATABASE_URL``
and ``TEST_REDIS_URL`` (``tests/services.py`` reads them) before anything else reads them, so the
embedded tests really run on SQLite and xdist's workers, which start from this environment, still
find them. Each process (each xdist worker) has an instance folder of its own, removed at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

for _name in ("DATABASE_URL", "REDIS_URL"):
    if _name in os.environ:
        os.environ["TEST_" + _name] = os.environ.pop(_name)
_SESSION_DIR = tempfile.mkdtemp(prefix="pixshift-tests-")
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)
# What the processes a test starts leave in the temporary folder (a killed service's forkserver
# socket folder, say) goes with the session's folder.
os.environ["TMPDIR"] = _SESSION_DIR
os.environ.update(
    {
        "PIXSHIFT_INSTANCE_PATH": os.path.join(_SESSION_DIR, "instance"),
        "PIXSHIFT_ALLOW_PRIVATE_URLS": "1",
        "PIXSHIFT_DOWNLOAD_BACKOFF": "0.05",
        "PIXSHIFT_RETRY_DELAY": "0.2",
        "PIXSHIFT_READ_TIMEOUT": "2",
        "PIXSHIFT_DOWNLOAD_TIMEOUT": "5",
        "PIXSHIFT_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "PIXSHIFT_WEBHOOK_TIMEOUT": "1",
        "PIXSHIFT_WEBHOOK_RETRY_SCHEDULE": "0.2,0.2,0.2,0.2",
    }
)
for _name in ("MEDIA_ROOT", "PUBLIC_BASE_URL", "PIXSHIFT_QUEUE_NAME"):
    os.environ.pop(_name, None)

import pytest  # noqa: E402
from services import scaleout_services  # noqa: E402

from harness.imageserver import ImageServer  # noqa: E402
from harness.livestack import Stack  # noqa: E402


@pytest.fixture(scope="session")
def image_server():
    with ImageServer() as server:
        yield server


@pytest.fixture(scope="session")
def app():
    """The app of the test process (SQLite in the session's instance folder)."""
    from pixshift import create_app
    from pixshift.db.schema import upgrade_schema
    from pixshift.pipeline import tasks

    app = create_app({"TESTING": True})
    with app.app_context():
        upgrade_schema()
    tasks.bind_app(app)
    return app


@pytest.fixture(scope="session")
def pg_app():
    """An app on a fresh PostgreSQL database, for the rules that must hold under real concurrency."""
    from pixshift import create_app

    with scaleout_services() as env:
        app = create_app(
            {
                "TESTING": True,
                "SQLALCHEMY_DATABASE_URI": env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1),
            }
        )
        from pixshift.db.schema import upgrade_schema

        with app.app_context():
            upgrade_schema()
        yield app
        from pixshift.db.extensions import db

        with app.app_context():
            db.engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.scaleout)])
def any_db_app(request):
    """The test app on SQLite, and again on PostgreSQL when it is configured."""
    return request.getfixturevalue("app" if request.param == "sqlite" else "pg_app")


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def inprocess_worker(app):
    """A real Huey consumer (thread workers) running in the test process, as in the embedded default."""
    from pixshift.pipeline import tasks
    from pixshift.server import start_inprocess_consumer

    tasks.huey.flush()  # tasks other tests enqueued without a worker are not this worker's business
    consumer = start_inprocess_consumer(tasks.huey, workers=8)
    yield consumer
    consumer.stop(graceful=False)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real S3-compatible server (SeaweedFS) for the object-storage tests, shared by the session."""
    from seaweed import SeaweedServer

    server = SeaweedServer(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.kill()  # throwaway data: no need to wait for a graceful stop


BACKENDS = ["embedded", pytest.param("scaleout", marks=pytest.mark.scaleout), "s3"]


@pytest.fixture(params=BACKENDS)
def stack(request, tmp_path):
    """A live PixShift in real processes: ``python -m pixshift`` alone (embedded), or with
    PostgreSQL + Redis and a separate ``huey_consumer`` (scale-out), or embedded with its media
    on a real S3 server, served through presigned redirects (s3)."""
    if request.param == "scaleout":
        with scaleout_services() as env:
            with Stack(tmp_path, env, separate_consumer=True) as s:
                yield s
    elif request.param == "s3":
        seaweed = request.getfixturevalue("seaweed")
        env = seaweed.env(prefix=f"t-{tmp_path.name}")
        with Stack(tmp_path, {**env, "PIXSHIFT_MEDIA_DELIVERY": "presigned"}, separate_consumer=False) as s:
            yield s
    else:
        with Stack(tmp_path, {}, separate_consumer=False) as s:
            yield s


# --- marks: what a test needs, read from its folder and its fixtures --------------------------------
# `pytest -m "not live and not browser and not bench"` is the fast suite (about a minute); CI runs all.
LIVE_FIXTURES = {
    "stack",
    "stacks",
    "live",
    "web",
    "server",
    "token_server",
    "token_stack",
    "seaweed",
    "scaleout",
    "unreachable_queue",
    "inprocess_worker",
}
FOLDER_MARKS = {"live": "live", "browser": "browser", "bench": "bench"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = item.path.parent.name
        if folder in FOLDER_MARKS:
            item.add_marker(FOLDER_MARKS[folder])
        if LIVE_FIXTURES.intersection(item.fixturenames):
            item.add_marker("live")

"""Huey: the queue and PixShift's background tasks (thin: they call ``pixshift.pipeline.processing``).

Importable anywhere without an app: the web enqueues by calling the tasks. Whoever runs them binds
an app first: ``huey_consumer pixshift.worker.huey`` (any machine) or ``python -m pixshift`` (in
its own process). The queue is Redis when ``REDIS_URL`` is set, else a SQLite file in the
instance folder.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, cast

from huey import PriorityRedisHuey, SqliteHuey

from pixshift import logs
from pixshift.config import settings
from pixshift.pipeline.processing import Runtime, fan_out_targets, mark_enqueued
from pixshift.pipeline.processing import process_image as run_image
from pixshift.pipeline.sweep import reclaim_expired
from pixshift.pipeline.windows import next_in_window
from pixshift.webhooks.delivery import attempt_delivery

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger(__name__)

_config = settings()
# results=False: the tasks' outcomes live in the database; Huey would keep every return value forever.
if _config.REDIS_URL:
    # Priorities let a new request's fan-out start ahead of a long queue of image tasks.
    huey = PriorityRedisHuey(_config.QUEUE_NAME, url=_config.REDIS_URL, results=False)
else:
    _config.INSTANCE_PATH.mkdir(parents=True, exist_ok=True)
    huey = SqliteHuey(_config.QUEUE_NAME, filename=str(_config.INSTANCE_PATH / "huey.db"), results=False)

_app: Flask | None = None


# Every consumer process sweeps every PIXSHIFT_SWEEP_SECONDS on a thread of its own: as a queued
# task it waited behind the very workers it must rescue (stalled downloads, costly images).
# Concurrent sweeps are safe (each change is a fenced UPDATE); no lock is taken, since a consumer
# killed while holding it would stop all sweeps. Registered before the hook that nices worker
# threads, so the sweeper it starts keeps the normal priority.
_sweeper_lock = threading.Lock()
_sweeper: threading.Thread | None = None
_sweeper_stop = threading.Event()


@huey.on_startup()
def start_sweeper() -> None:
    global _sweeper
    with _sweeper_lock:
        if _sweeper is not None and _sweeper.is_alive():
            return
        _sweeper_stop.clear()
        _sweeper = threading.Thread(target=_sweep_forever, name="pixshift-sweeper", daemon=True)
        _sweeper.start()


@huey.on_shutdown()
def stop_sweeper() -> None:
    _sweeper_stop.set()


@huey.on_startup()
def lower_worker_priority() -> None:
    """Each worker thread yields the CPU to request handling (on Linux nice is per thread, so on
    the embedded default this leaves the web server's threads in the same process as they are)."""
    if _config.WORKER_NICE > 0:
        try:
            os.nice(_config.WORKER_NICE)
        except OSError:  # not allowed here: run at the normal priority
            pass


def bind_app(app: Flask) -> None:
    """Run tasks against this app: the process that runs workers builds it once and binds it."""
    global _app
    _app = app


def _flask_app() -> Flask:
    if _app is None:
        raise RuntimeError("no app is bound to the tasks: run workers through pixshift.worker or python -m pixshift")
    return _app


def _runtime() -> Runtime:
    return cast(Runtime, _flask_app().extensions["pixshift"])


@huey.task(priority=10)
def start_request(request_id: str) -> int:
    """Fan the request out: its first window of image tasks (pixshift.pipeline.windows); each image that
    leaves the queue enqueues the request's next one, so requests take turns in the queue."""
    with _flask_app().app_context():
        ids = fan_out_targets(request_id, _runtime().request_window)
        for image_id in ids:
            process_image(image_id)
        mark_enqueued(request_id)
    return len(ids)


@huey.task(retries=3, retry_delay=5)  # Huey retries only what escaped the pipeline: database errors
def process_image(image_id: int, retry: bool = False) -> str | None:
    """One attempt at one image. The image holds one of its request's turns in the queue
    (pixshift.pipeline.windows), also while it is parked behind its host's cap; when its attempt ends the
    turn goes to the request's next image. A delayed retry (``retry``) holds none: its first
    attempt handed the turn on already."""
    token = logs.bind(image_id=image_id)
    try:
        with _flask_app().app_context():
            outcome = run_image(image_id, _runtime(), resume=process_image)
            following = next_in_window(outcome.request_id) if outcome.request_id and not retry else None
    finally:
        logs.unbind(token)
    if outcome.retry_in is not None:
        process_image.schedule(args=(image_id, True), delay=outcome.retry_in)
    if following is not None:
        process_image(following)
    if outcome.wake is not None:
        host, delay = outcome.wake
        wake_host.schedule(args=(host,), delay=delay)
    for delivery_id in outcome.deliveries:
        deliver_webhook(delivery_id)
    return outcome.state


@huey.task(priority=5)
def wake_host(host: str) -> int:
    """A throttled host's pause ended: enqueue its parked images again, up to its free slots (any
    consumer may run this: on scale-out the parked images are in Redis). A pause that another
    throttle extended schedules this again for its new end."""
    images, left = _runtime().host_slots.wake(host)
    if left > 0:
        wake_host.schedule(args=(host,), delay=left)
    for image_id in images:
        process_image(image_id)
    return len(images)


@huey.task()
def deliver_webhook(delivery_id: int) -> float | None:
    """One attempt at one webhook delivery; schedules the next attempt itself."""
    rt = _runtime()
    with _flask_app().app_context():
        retry_in = attempt_delivery(delivery_id, rt.webhooks, rt.fetch_policy)
    if retry_in is not None:
        deliver_webhook.schedule(args=(delivery_id,), delay=retry_in)
    return retry_in


def sweep() -> int:
    """Requeue work that dead workers or lost tasks left; see ``pixshift.pipeline.sweep.reclaim_expired``."""
    queue_empty = huey.pending_count() == 0
    with _flask_app().app_context():
        found = reclaim_expired(_runtime(), queue_empty=queue_empty)
    for image_id in found.images + found.opened:  # a lost task's turn goes on with its image
        process_image(image_id)
    for request_id in found.requests:
        start_request(request_id)
    for delivery_id in found.deliveries:
        deliver_webhook(delivery_id)
    return len(found.images) + len(found.requests) + len(found.deliveries)


def _sweep_forever() -> None:
    while not _sweeper_stop.wait(_config.SWEEP_SECONDS):
        try:
            sweep()
        except Exception:  # a database or queue outage: try again at the next sweep
            logger.exception("sweep failed")

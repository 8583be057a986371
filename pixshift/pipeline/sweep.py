"""The sweep: work that a dead worker or a lost task left behind, found so nothing stays stuck.

Every consumer process runs it on a thread of its own (``pixshift.pipeline.tasks.sweep``), which
enqueues what it returns. Concurrent sweeps are safe: each change is a fenced UPDATE, and
enqueuing an image twice is harmless, since only one claim can succeed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from pixshift.db.extensions import db, rowcount
from pixshift.db.models import Image, ImageState, Request, RequestState, utcnow
from pixshift.events import EventBus
from pixshift.pipeline.processing import (
    Runtime,
    copy_to_followers,
    finish_request_if_complete,
    image_events,
    publish_event,
)
from pixshift.pipeline.windows import open_window, stalled_requests
from pixshift.webhooks.outbox import overdue_deliveries

_ORPHANS_PER_SWEEP = 10_000


@dataclass(frozen=True)
class Reclaimed:
    images: list[int]  # image ids to enqueue again
    requests: list[str]  # request ids whose fan-out must run again
    deliveries: list[int]  # webhook deliveries to enqueue (new, or whose task was lost)
    opened: list[int] = dataclasses.field(default_factory=list)  # images of stalled windows to enqueue


def reclaim_expired(rt: Runtime, *, queue_empty: bool, now: datetime | None = None) -> Reclaimed:
    """Run each sweep once, in this order, and return what the caller must enqueue.

    The sweeps that look for lost tasks in the queue run only when it is empty (``queue_empty``):
    otherwise the task may still be waiting its turn there.
    """
    now = now or utcnow()
    requeue = _requeue_expired_leases(rt, now)
    opened: list[int] = []
    if queue_empty:
        _cancel_leftovers(now)
        requeue += [i for i in _lost_image_tasks(now) if i not in requeue]
        opened = _reopen_stalled_windows(rt)
    stale_fan_outs = _stale_fan_outs(rt, now)
    unfinished = _unfinished_requests()
    db.session.commit()  # the two reads above share this transaction
    deliveries = overdue_deliveries(now)
    deliveries += _finish_complete(unfinished, rt)
    return Reclaimed(images=requeue, requests=stale_fan_outs, deliveries=deliveries, opened=opened)


def _requeue_expired_leases(rt: Runtime, now: datetime) -> list[int]:
    """Processing images whose lease expired: their worker died. Each goes back to the queue, or
    fails once it has used ``max_attempts`` (and the images sharing its URL with it); returns the
    ids to enqueue again."""
    expired = db.session.execute(
        select(Image.id, Image.attempts, Image.request_id).where(
            Image.state == ImageState.PROCESSING.value, Image.lease_expires_at < now
        )
    ).all()
    requeue: list[int] = []
    for image_id, attempts, request_id in expired:
        exhausted = attempts >= rt.max_attempts
        values: dict[str, object] = {
            "state": ImageState.QUEUED.value,
            "lease_expires_at": None,
            "error_code": "worker_lost",
            "error_message": "the worker processing this image stopped (will retry)",
        }
        if exhausted:
            values.update(
                state=ImageState.FAILED.value,
                finished_at=now,
                error_message=f"the worker processing this image stopped {attempts} times; giving up",
            )
        changed = rowcount(
            db.session.execute(
                update(Image)
                .where(Image.id == image_id, Image.attempts == attempts, Image.state == ImageState.PROCESSING.value)
                .values(**values)
            )
        )
        followers = copy_to_followers(image_id, values, now) if changed and exhausted else []
        db.session.commit()
        if changed and exhausted:
            _publish_images([image_id, *followers], request_id, rt.bus)
        elif changed:
            requeue.append(image_id)
    return requeue


def _publish_images(image_ids: list[int], request_id: str, bus: EventBus) -> None:
    """Tell listeners images ended; best effort, since the database is the record."""
    events = image_events(image_ids)
    db.session.commit()
    for event in events:
        publish_event(bus, request_id, event)


def _cancel_leftovers(now: datetime) -> None:
    """Queued images of cancelled requests that a race gave back to the queue after the cancel
    (they can no longer be claimed): end them cancelled, so their request can finish."""
    cancelled = select(Request.id).where(Request.cancelled_at.is_not(None), Request.finished_at.is_(None))
    db.session.execute(
        update(Image)
        .where(Image.state == ImageState.QUEUED.value, Image.request_id.in_(cancelled))
        .values(**cancelled_unprocessed(now))
    )
    db.session.commit()


def cancelled_unprocessed(now: datetime) -> dict[str, object]:
    """What a queued image of a cancelled request becomes (``pixshift.uploads.actions`` and the sweep)."""
    return {
        "state": ImageState.CANCELLED.value,
        "error_code": "cancelled",
        "error_message": "the request was cancelled before this image was processed",
        "lease_expires_at": None,
        "finished_at": now,
    }


def _lost_image_tasks(now: datetime) -> Sequence[int]:
    """Queued images that are due and inside their request's window, when the task queue is empty:
    their task was lost (a Redis restart, a worker killed between taking a task and claiming).
    At most ``_ORPHANS_PER_SWEEP`` a sweep; images that share another's URL wait for that one."""
    return db.session.scalars(
        select(Image.id)
        .join(Request, Request.id == Image.request_id)
        .where(
            Image.state == ImageState.QUEUED.value,
            Image.source_id.is_(None),
            Request.enqueued_at.is_not(None),
            or_(Request.queued_through.is_(None), Image.id <= Request.queued_through),
            or_(Image.lease_expires_at.is_(None), Image.lease_expires_at <= now),
        )
        .limit(_ORPHANS_PER_SWEEP)
    ).all()


def _reopen_stalled_windows(rt: Runtime) -> list[int]:
    """Requests whose window emptied with images left, when the task queue is empty: the task that
    should have moved the window on was lost. Opens each again; returns the images to enqueue."""
    opened: list[int] = []
    for request_id in stalled_requests():
        opened += open_window(request_id, rt.request_window)
    return opened


def _stale_fan_outs(rt: Runtime, now: datetime) -> list[str]:
    """Requests older than a lease whose fan-out never completed: its task was lost; run it again.
    Read in the caller's transaction."""
    return list(
        db.session.scalars(
            select(Request.id).where(
                Request.enqueued_at.is_(None),
                Request.finished_at.is_(None),
                Request.created_at < now - timedelta(seconds=rt.lease_seconds),
            )
        ).all()
    )


def _unfinished_requests() -> Sequence[str]:
    """Processing requests not yet finished, for ``_finish_complete``. Read in the caller's
    transaction."""
    return db.session.scalars(
        select(Request.id).where(Request.finished_at.is_(None), Request.state == RequestState.PROCESSING.value)
    ).all()


def _finish_complete(request_ids: Sequence[str], rt: Runtime) -> list[int]:
    """Finish those of the requests with no unfinished image left: the worker that ended their last
    image died before finishing them. Returns their webhook deliveries to enqueue."""
    deliveries: list[int] = []
    for request_id in request_ids:
        deliveries += finish_request_if_complete(request_id, rt)
    return deliveries

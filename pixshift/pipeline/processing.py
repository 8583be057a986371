"""One image's life: claim, fetch, compress, store, record; and a request's end, exactly once.

This module and the sweep (``pixshift.pipeline.sweep``) are the only places that move images and
requests between states. Every transition is a conditional UPDATE, so two workers can never both
own an image or both finish a request:

- an image is claimed (queued -> processing) with a lease; ``attempts`` is bumped and acts as
  a fencing token, so a worker that outlived its lease cannot overwrite a newer attempt;
- a worker that dies leaves an expired lease; the sweep puts the image back in the queue, or
  fails it once it has used its attempts; it also re-enqueues queued images whose task was lost,
  and re-runs a fan-out that never completed;
- a queued image's ``lease_expires_at`` is its not-before time (a retry's backoff);
- an image that shares its URL with an earlier one of the request (``source_id``) is never
  claimed: its first image's result (or failure) is copied to it when that one ends;
- a cancelled request's queued images end ``cancelled`` at once (``pixshift.uploads.actions``);
  one being processed ends ``cancelled`` before its compression, and none of its images is
  claimed or given back to the queue again;
- after an image ends, the request finishes when no unfinished image is left; the
  ``finished_at IS NULL`` guard lets exactly one caller finish each run of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, exists, func, or_, select, update

from pixshift import logs
from pixshift.db.extensions import db, rowcount
from pixshift.db.models import (
    FINISHED_IMAGE_STATES,
    Image,
    ImageCounts,
    ImageState,
    Product,
    Request,
    RequestState,
    utcnow,
)
from pixshift.events import Event, EventBus
from pixshift.failures import ImageFailure, Throttled
from pixshift.imaging import codec_processes, formats
from pixshift.imaging.compress import compress_to_ratio
from pixshift.net.fetch import FetchPolicy, fetch_image
from pixshift.net.host_slots import HostGate, host_of
from pixshift.pipeline import reuse
from pixshift.pipeline.windows import link_shared_urls, open_window
from pixshift.storage import MediaStore, content_key
from pixshift.webhooks.delivery import WebhookSettings
from pixshift.webhooks.outbox import create_event

logger = logging.getLogger(__name__)
_FINISHED_IMAGES = [s.value for s in FINISHED_IMAGE_STATES]
_CLOCK_TOLERANCE = timedelta(seconds=1)  # a delayed task may fire a little before the stored time
# The per-image statements use the tables, not the ORM classes: an ORM UPDATE also evaluates its
# WHERE clause against the session's objects, which cost more CPU than the database did.
# (Each class maps one Table; SQLAlchemy types __table__ as any FromClause.)
_images, _products, _requests = (cast(Table, m.__table__) for m in (Image, Product, Request))


_NOT_CANCELLED = ~exists().where(_requests.c.id == _images.c.request_id, _requests.c.cancelled_at.is_not(None))
# Built once: the two statements every image runs (SET of _FINISH: the parameters' column names).
_CLAIM = (
    update(_images)
    .where(
        _images.c.id == bindparam("b_id"),
        _images.c.state == ImageState.QUEUED.value,
        or_(_images.c.lease_expires_at.is_(None), _images.c.lease_expires_at <= bindparam("b_due")),
        _NOT_CANCELLED,
    )
    .values(
        state=ImageState.PROCESSING.value,
        attempts=_images.c.attempts + 1,
        lease_expires_at=bindparam("b_until"),
        started_at=bindparam("b_now"),
    )
    .returning(_images.c.attempts, _images.c.input_url, _images.c.request_id)
)
# The fence of every write by the worker that owns an attempt: this image, still processing, still
# at that attempt (parameters b_id, b_attempt).
_OWNED = (
    _images.c.id == bindparam("b_id"),
    _images.c.attempts == bindparam("b_attempt"),
    _images.c.state == ImageState.PROCESSING.value,
)
_FINISH = update(_images).where(*_OWNED).returning(_images.c.request_id)
_QUEUED_URL = select(_images.c.input_url).where(
    _images.c.id == bindparam("b_id"), _images.c.state == ImageState.QUEUED.value
)
# What a copy of an image's end gives the images that share its URL and are still waiting for it.
_FOLLOWERS = update(_images).where(_images.c.source_id == bindparam("b_id"), _images.c.state == ImageState.QUEUED.value)
_CANCELLED_FIELDS: dict[str, object] = {
    "state": ImageState.CANCELLED.value,
    "error_code": "cancelled",
    "error_message": "the request was cancelled before this image was compressed",
}


@dataclass
class Runtime:
    """What processing needs besides the database, built once per process from the config
    (``create_app``; every default is in ``pixshift/config.py``)."""

    store: MediaStore
    bus: EventBus
    fetch_policy: FetchPolicy
    webhooks: WebhookSettings
    ratio: float
    min_quality: int
    max_quality: int
    max_pixels: int
    thumbnail_size: int
    lease_seconds: int
    max_attempts: int
    retry_delay: float
    base_url: str  # for links in events when the upload did not record one
    # Downloads overlap in many threads; decoding and encoding run in this many child processes
    # (pixshift.imaging.codec_processes), so memory stays bounded and a codec crash ends only a child.
    cpu_slots: int
    host_slots: HostGate  # in memory (embedded) or in Redis (scale-out: the cap is across processes)
    image_cpu_seconds: float  # a child that spends more on one image is killed: too_costly
    request_window: int  # image tasks of one request in the queue at once (pixshift.pipeline.windows)
    reuse_results: bool = True  # revalidate and reuse results of earlier requests (pixshift.pipeline.reuse)
    jpeg_encoder: str = "libjpeg-turbo"  # pixshift.imaging.compress.JPEG_ENCODERS


@dataclass(frozen=True)
class Outcome:
    state: str | None  # the image's state after this call, None when it was not ours to process
    retry_in: float | None = None  # seconds after which the caller should enqueue it again
    deliveries: tuple[int, ...] = ()  # webhook deliveries to enqueue: this image finished its request
    # Set when this call ran an attempt, which ends the image's turn in its request's window in the
    # queue: the caller may hand that turn to the request's next image (pixshift.pipeline.windows).
    request_id: str | None = None
    # (host, seconds): this attempt paused the host; the caller hands its parked images back then.
    wake: tuple[str, float] | None = None


def process_image(image_id: int, rt: Runtime, resume: Callable[[int], None] = lambda image_id: None) -> Outcome:
    """Run one attempt at one image; safe to call twice, or after another worker died.

    When its host already has ``rt.host_slots.limit`` downloads running (or is paused), the
    image is parked unclaimed and this returns at once; ``resume(image_id)`` is called with a
    parked image when a download from its host ends, to enqueue it again. When the host throttled
    this attempt, the outcome's ``wake`` says when to hand the host's parked images back.
    """
    url = db.session.execute(_QUEUED_URL, {"b_id": image_id}).scalar()
    db.session.commit()
    if url is None:
        return Outcome(None)
    host = host_of(url)
    held = rt.host_slots.try_acquire(host, image_id)
    if held is None:
        return Outcome(None)
    slot = _HostSlot(rt.host_slots, host, held, resume)
    try:
        claim = claim_image(image_id, rt.lease_seconds)
        if claim is None:
            return Outcome(None)
        attempt, url, request_id = claim
        token = logs.bind(request_id=request_id, image_id=image_id)
        try:
            outcome = _attempt(image_id, attempt, url, request_id, rt, slot)
        finally:
            logs.unbind(token)
        outcome = dataclasses.replace(outcome, request_id=request_id)
    finally:
        slot.release()
    if slot.paused_for is not None:
        outcome = dataclasses.replace(outcome, wake=(host, slot.paused_for))
    return outcome


class _HostSlot:
    """A download slot of one host, given back once: when the download ends, or at the latest
    when the attempt does."""

    def __init__(self, slots: HostGate, host: str, token: str, resume: Callable[[int], None]) -> None:
        self.host = host
        self._slots = slots
        self._token = token
        self._resume = resume
        self._held = True
        self._succeeded = False
        self.paused_for: float | None = None  # seconds: the host throttled this download

    @contextlib.contextmanager
    def download(self) -> Iterator[None]:
        """Hold the slot while the body downloads. A throttled download pauses the host before
        the slot is given back, so the slot cannot start another download from it meanwhile."""
        try:
            yield
            self._succeeded = True
        except Throttled as throttled:
            self.paused_for = self._slots.pause(self.host, throttled.retry_after)
            logger.info("%s throttled us (%s): pausing it for %.1f s", self.host, throttled.code, self.paused_for)
            raise
        finally:
            self.release()  # compressing needs no connection to the host

    def release(self) -> None:
        if self._held:
            self._held = False
            waiting = self._slots.release(self.host, self._token, succeeded=self._succeeded)
            if waiting is not None:
                self._resume(waiting)


def _attempt(image_id: int, attempt: int, url: str, request_id: str, rt: Runtime, slot: _HostSlot) -> Outcome:
    publish_event(
        rt.bus,
        request_id,
        {
            "type": "image",
            "request_id": request_id,
            "image_id": image_id,
            "state": ImageState.PROCESSING.value,
            "attempt": attempt,
        },
    )
    try:
        fields = _fetch_and_compress(image_id, attempt, url, request_id, rt, slot)
    except _Cancelled:
        fields = _CANCELLED_FIELDS
    except ImageFailure as failure:
        if not (failure.retryable and attempt < rt.max_attempts):
            fields = _failure_fields(failure, attempt)
        elif _is_cancelled(request_id):  # a cancelled request's images are not tried again
            fields = _CANCELLED_FIELDS
        else:
            # A throttled host's pause, not the usual backoff: the image is due when its host is.
            retry_in = slot.paused_for if slot.paused_for is not None else rt.retry_delay * 2 ** (attempt - 1)
            logger.info("attempt %d failed (%s), retrying in %.1f s", attempt, failure, retry_in)
            if _release(image_id, attempt, failure, retry_in):
                return Outcome(ImageState.QUEUED.value, retry_in=retry_in)
            if not _is_cancelled(request_id):  # our lease was taken over: the image is another's now
                return Outcome(None)
            fields = _CANCELLED_FIELDS  # cancelled while we were releasing it
    except Exception as exc:  # a bug or an unexpected library error must not leave the image stuck
        logger.exception("unexpected error processing image")
        fields = _failure_fields(
            ImageFailure("internal_error", f"unexpected error: {type(exc).__name__}: {exc}"), attempt
        )
    return _finish_image(image_id, attempt, fields, rt)


def claim_image(image_id: int, lease_seconds: int) -> tuple[int, str, str] | None:
    """Take the image for this worker: (attempt number, URL, request id), or None if not claimable."""
    now = utcnow()
    row = db.session.execute(
        _CLAIM,
        {
            "b_id": image_id,
            "b_due": now + _CLOCK_TOLERANCE,
            "b_now": now,
            "b_until": now + timedelta(seconds=lease_seconds),
        },
    ).first()
    if row is None:
        db.session.rollback()
        return None
    db.session.execute(
        update(_requests)
        .where(_requests.c.id == row.request_id, _requests.c.state == RequestState.QUEUED.value)
        .values(state=RequestState.PROCESSING.value, started_at=now)
    )
    db.session.commit()
    return row.attempts, row.input_url, row.request_id


class _Cancelled(Exception):
    """The image's request was cancelled while it was being downloaded: compress nothing."""


def _is_cancelled(request_id: str) -> bool:
    cancelled = db.session.scalar(select(Request.cancelled_at.is_not(None)).where(Request.id == request_id))
    db.session.commit()
    return bool(cancelled)


def _fetch_and_compress(
    image_id: int, attempt: int, url: str, request_id: str, rt: Runtime, slot: _HostSlot
) -> dict[str, object]:
    claimed = time.monotonic()
    plan = reuse.plan(image_id, url, rt)  # an earlier request's result, and validators to revalidate it
    with slot.download():
        fetched = fetch_image(
            url, rt.fetch_policy, plan.validators if plan else None, stop=lambda: _is_cancelled(request_id)
        )
    if _is_cancelled(request_id):  # no compression starts for a cancelled request
        raise _Cancelled
    if time.monotonic() - claimed > rt.lease_seconds / 4:  # else most of the claim's lease is left
        renew_lease(image_id, attempt, rt.lease_seconds)
    input_key = "" if fetched.not_modified else content_key(fetched.data)  # hashed once: reuse and store
    reused = reuse.reused_fields(plan, fetched, rt, input_key)  # a 304, or bytes already compressed
    if reused is not None:
        reuse.remember(plan, fetched, reused)
        return reused
    result = codec_processes.run(
        compress_to_ratio,
        fetched.data,
        processes=rt.cpu_slots,
        cpu_seconds=rt.image_cpu_seconds,
        heartbeat_seconds=rt.lease_seconds / 4,
        heartbeat=lambda: renew_lease(image_id, attempt, rt.lease_seconds),
        ratio=rt.ratio,
        max_pixels=rt.max_pixels,
        min_quality=rt.min_quality,
        max_quality=rt.max_quality,
        thumbnail_size=rt.thumbnail_size,
        jpeg_encoder=rt.jpeg_encoder,
    )
    # Every object is stored before the image is recorded done, so done always means retrievable.
    fields: dict[str, object] = {
        "state": ImageState.DONE.value,
        "input_key": rt.store.put(fetched.data, formats.mime_type(result.input_format), key=input_key),
        "input_bytes": len(fetched.data),
        "input_format": result.input_format,
        "input_width": result.input_width,
        "input_height": result.input_height,
        "input_thumb_key": rt.store.put(result.input_thumbnail, result.mime_type),
        "output_key": rt.store.put(result.data, result.mime_type),
        "output_bytes": len(result.data),
        "output_format": result.format,
        "output_width": result.width,
        "output_height": result.height,
        "output_thumb_key": rt.store.put(result.output_thumbnail, result.mime_type),
        "quality": result.quality,
        "scale": result.scale,
        "encodes": result.encodes,
        "notes": ",".join(result.notes) or None,
        "error_code": None,
        "error_message": None,
    }
    reuse.remember(plan, fetched, fields)
    return fields


def _failure_fields(failure: ImageFailure, attempt: int) -> dict[str, object]:
    message = failure.message
    if attempt > 1:
        message += f" (after {attempt} attempts)"
    return {"state": ImageState.FAILED.value, "error_code": failure.code, "error_message": message}


def _release(image_id: int, attempt: int, failure: ImageFailure, retry_in: float) -> bool:
    """Give a retryable failure back to the queue, claimable again after ``retry_in`` seconds.

    The reason stays visible meanwhile. If the delayed task is lost, the sweep finds the image
    due and enqueues it again. An image of a request cancelled meanwhile is not given back.
    """
    result = db.session.execute(
        update(_images)
        .where(*_OWNED, _NOT_CANCELLED)
        .values(
            state=ImageState.QUEUED.value,
            lease_expires_at=utcnow() + timedelta(seconds=retry_in),
            error_code=failure.code,
            error_message=f"{failure.message} (will retry)",
        ),
        {"b_id": image_id, "b_attempt": attempt},
    )
    db.session.commit()
    return rowcount(result) == 1


def renew_lease(image_id: int, attempt: int, lease_seconds: int) -> None:
    """Keep the image while a slow step runs (waiting for a compression child counts against the lease)."""
    db.session.execute(
        update(_images).where(*_OWNED).values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds)),
        {"b_id": image_id, "b_attempt": attempt},
    )
    db.session.commit()


def _finish_image(image_id: int, attempt: int, fields: dict[str, object], rt: Runtime) -> Outcome:
    now = utcnow()
    result = db.session.execute(
        _FINISH, {"b_id": image_id, "b_attempt": attempt, "lease_expires_at": None, "finished_at": now, **fields}
    ).first()
    # Read in the same transaction: this image's event, and those of the images sharing its URL.
    events = image_events([image_id, *copy_to_followers(image_id, fields, now)]) if result is not None else []
    db.session.commit()
    if result is None or not events:  # our lease expired and another attempt owns the image now
        logger.warning("attempt %d finished after its lease was taken over; result dropped", attempt)
        return Outcome(None)
    if fields["state"] == ImageState.DONE.value:
        logger.info(
            "done: %d -> %d bytes at quality %d in %d encodes",
            fields["input_bytes"],
            fields["output_bytes"],
            fields["quality"],
            fields["encodes"],
        )
    else:
        logger.info("failed: %s: %s", fields["error_code"], fields["error_message"])
    request_id = result.request_id
    for event in events:
        publish_event(rt.bus, request_id, event)
    state = fields["state"]
    assert isinstance(state, str)
    return Outcome(state, deliveries=tuple(finish_request_if_complete(request_id, rt)))


def copy_to_followers(image_id: int, fields: dict[str, object], now: datetime) -> list[int]:
    """Give the images waiting on this one's URL its end (in the caller's transaction): their ids."""
    copied = {**fields, "reused": True, "lease_expires_at": None, "finished_at": now}
    return list(db.session.scalars(_FOLLOWERS.values(**copied).returning(_images.c.id), {"b_id": image_id}).all())


def image_counts(request_id: str) -> ImageCounts:
    """Counts by state, derived from the images themselves."""
    by_state = dict(
        db.session.execute(
            select(Image.state, func.count()).where(Image.request_id == request_id).group_by(Image.state)
        ).all()
    )
    total = sum(by_state.values())
    done = by_state.get(ImageState.DONE.value, 0)
    failed = by_state.get(ImageState.FAILED.value, 0)
    cancelled = by_state.get(ImageState.CANCELLED.value, 0)
    return {
        "total": total,
        "queued": by_state.get(ImageState.QUEUED.value, 0),
        "processing": by_state.get(ImageState.PROCESSING.value, 0),
        "done": done,
        "failed": failed,
        "cancelled": cancelled,
        "percent": round(100 * (done + failed + cancelled) / total, 1) if total else 100.0,
    }


def image_events(image_ids: list[int]) -> list[Event]:
    """The events that tell listeners these images ended: one SELECT, no ORM objects."""
    i = _images.c
    rows = db.session.execute(
        select(
            i.id,
            i.request_id,
            _products.c.serial_number,
            i.position,
            i.state,
            i.error_code,
            i.error_message,
            i.input_bytes,
            i.output_bytes,
            i.quality,
            i.reused,
        )
        .join_from(_images, _products, _products.c.id == i.product_id)
        .where(i.id.in_(image_ids))
        .order_by(i.id)
    ).all()
    return [
        {
            "type": "image",
            "request_id": row.request_id,
            "image_id": row.id,
            "serial_number": row.serial_number,
            "position": row.position,
            "state": row.state,
            "error_code": row.error_code,
            "error_message": row.error_message,
            "input_bytes": row.input_bytes,
            "output_bytes": row.output_bytes,
            "quality": row.quality,
            "reused": row.reused,
        }
        for row in rows
    ]


def publish_event(bus: EventBus, request_id: str, event: Event) -> None:
    try:
        bus.publish(request_id, event)
    except Exception:  # a bus outage must not fail the image or the request
        logger.warning("could not publish a %s event for request %s", event["type"], request_id, exc_info=True)


def finish_request_if_complete(request_id: str, rt: Runtime) -> list[int]:
    """Finish the request if no image is left: state, webhook event and deliveries in one transaction.

    Returns the webhook deliveries to enqueue; empty unless this call is the one that finished it.
    """
    unfinished = db.session.scalar(
        select(exists().where(_images.c.request_id == request_id, _images.c.state.not_in(_FINISHED_IMAGES)))
    )
    if unfinished:
        db.session.commit()
        return []
    counts = image_counts(request_id)
    if db.session.scalar(select(Request.cancelled_at).where(Request.id == request_id)) is not None:
        state = RequestState.CANCELLED
    elif counts["failed"] == 0:
        state = RequestState.COMPLETED
    elif counts["done"] == 0:
        state = RequestState.FAILED
    else:
        state = RequestState.COMPLETED_WITH_ERRORS
    now = utcnow()
    result = db.session.execute(
        update(Request)
        .where(Request.id == request_id, Request.finished_at.is_(None))
        .values(state=state.value, finished_at=now)
    )
    if rowcount(result) != 1:
        db.session.rollback()
        return []
    req = db.session.get(Request, request_id)
    assert req is not None  # just updated in this transaction
    deliveries = create_event(req, counts, req.base_url or rt.base_url)
    db.session.commit()
    publish_event(
        rt.bus,
        request_id,
        {
            "type": "request",
            "request_id": request_id,
            "state": state.value,
            "run": req.run,
            "counts": counts,
            "finished_at": now.isoformat(),
        },
    )
    return deliveries


def fan_out_targets(request_id: str, window: int) -> list[int]:
    """The images a fan-out must enqueue: the first window of the request's images, each URL once
    (pixshift.pipeline.windows); none when an earlier fan-out already completed."""
    if db.session.scalar(select(Request.enqueued_at).where(Request.id == request_id)) is not None:
        db.session.commit()
        return []
    link_shared_urls(request_id)
    return open_window(request_id, window)


def mark_enqueued(request_id: str) -> None:
    """Record that every image of the request has a task in the queue."""
    db.session.execute(update(Request).where(Request.id == request_id).values(enqueued_at=utcnow()))
    db.session.commit()

"""A person's hand on a running or finished request: cancel it, or retry its failed images.

Both are conditional UPDATEs on the request and its images in one transaction, like every other
state change (``pixshift.pipeline.processing``), so a double click, two browsers or a retry racing a worker
change the state once. A retry is a new run of the request: ``requests.run`` goes up, and the run
finishes, exactly once, with a webhook event of its own.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, select, update

from pixshift.db.extensions import db, rowcount
from pixshift.db.models import Image, ImageState, Request, RequestState, utcnow
from pixshift.events import EventBus
from pixshift.failures import Conflict
from pixshift.pipeline.processing import Runtime, finish_request_if_complete, publish_event
from pixshift.pipeline.sweep import cancelled_unprocessed
from pixshift.uploads.reporting import is_finished

_images, _requests = (cast(Table, m.__table__) for m in (Image, Request))
i, r = _images.c, _requests.c
RETRYABLE = (ImageState.FAILED.value, ImageState.CANCELLED.value)


def cancel_request(req: Request, rt: Runtime) -> list[int]:
    """Stop a queued or processing request: its queued images end ``cancelled`` now, images being
    downloaded end ``cancelled`` before their compression, and no image of it is claimed again;
    it ends ``cancelled`` once the last image in flight ends. Asking twice changes nothing more.
    Returns the webhook deliveries to enqueue when this call finished it. Raises Conflict when the
    request had already finished."""
    if is_finished(req):
        raise Conflict("already_finished", f"request {req.id} has already finished ({req.state}); nothing to cancel")
    now = utcnow()
    marked = rowcount(
        db.session.execute(
            update(_requests)
            .where(r.id == req.id, r.finished_at.is_(None), r.cancelled_at.is_(None))
            .values(cancelled_at=now)
        )
    )
    if marked:
        # Images sharing the URL of one being processed wait for its result instead (it may finish).
        in_flight = select(i.id).where(i.request_id == req.id, i.state == ImageState.PROCESSING.value)
        db.session.execute(
            update(_images)
            .where(
                i.request_id == req.id,
                i.state == ImageState.QUEUED.value,
                i.source_id.is_(None) | i.source_id.not_in(in_flight),
            )
            .values(**cancelled_unprocessed(now))
        )
    db.session.commit()
    if marked:
        publish_event(rt.bus, req.id, {"type": "request", "request_id": req.id, "state": req.state, "cancelling": True})
    return finish_request_if_complete(req.id, rt)


def retry_request(req: Request, bus: EventBus) -> int:
    """Put a finished request's failed and cancelled images back in the queue as a new run; returns
    how many. The caller enqueues the request's fan-out. Raises NotFinished (via the caller's
    lookup) or Conflict when there is nothing to retry or another retry got there first."""
    if not is_finished(req):
        raise Conflict("not_finished", f"request {req.id} is {req.state}; retry once it has finished")
    run = req.run
    images = rowcount(
        db.session.execute(
            update(_images)
            .where(i.request_id == req.id, i.state.in_(RETRYABLE))
            .values(
                state=ImageState.QUEUED.value,
                attempts=0,
                error_code=None,
                error_message=None,
                lease_expires_at=None,
                started_at=None,
                finished_at=None,
                reused=False,
            )
        )
    )
    if images == 0:
        db.session.rollback()
        raise Conflict("nothing_to_retry", f"request {req.id} has no failed or cancelled image to retry")
    moved = rowcount(
        db.session.execute(
            update(_requests)
            .where(r.id == req.id, r.run == run, r.finished_at.is_not(None))
            .values(
                state=RequestState.PROCESSING.value,
                run=run + 1,
                finished_at=None,
                cancelled_at=None,
                enqueued_at=None,
                queued_through=None,
            )
        )
    )
    if moved != 1:
        db.session.rollback()
        raise Conflict("nothing_to_retry", f"request {req.id} is being retried already")
    db.session.commit()
    publish_event(bus, req.id, {"type": "request", "request_id": req.id, "state": RequestState.PROCESSING.value})
    return images

"""Which of a request's images wait in the task queue: at most a window of them at a time.

Fan-out used to enqueue every image of a request at once, so a 200,000-image request filled the
first-in-first-out queue and a 3-image request uploaded after it waited for all of them. Now a
request holds ``size`` turns: that many of its images are in the queue, running, or parked behind
their host's cap (pixshift.net.host_slots), and each image whose attempt ends hands its turn to the
request's next queued image. Running requests' tasks therefore interleave in the queue, and in a
host's line of parked images: a new request's first images wait behind at most ``size`` images of
each running request, on the embedded default and on any number of consumers alike, and nothing but
the queue itself is shared. A parked image keeps its turn, so one slow host holds at most ``size``
images of a request out of the queue, never the whole request. ``requests.queued_through`` is the cursor: the
highest image id handed to the queue; it only moves forward, by conditional UPDATEs.

Images with a URL that an earlier image of the same request has are never queued: they share that
image's download and compression (``images.source_id``; the pipeline copies the result).
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import ColumnElement, Table, exists, func, select, update

from pixshift.db.extensions import db, rowcount
from pixshift.db.models import Image, ImageState, Request

_images, _requests = (cast(Table, m.__table__) for m in (Image, Request))
i, r = _images.c, _requests.c
_QUEUED = ImageState.QUEUED.value
_TRIES = 20
_PROCESSING = ImageState.PROCESSING.value


def link_shared_urls(request_id: str) -> int:
    """Point every image whose URL appeared earlier in the request at that first image; returns
    how many images share another's download. Idempotent (the fan-out may run twice)."""
    first = (
        select(i.input_url, func.min(i.id).label("first_id"))
        .where(i.request_id == request_id)
        .group_by(i.input_url)
        .having(func.count() > 1)
        .subquery()
    )
    result = db.session.execute(
        update(_images)
        .where(
            i.request_id == request_id,
            i.input_url == first.c.input_url,
            i.id != first.c.first_id,
            i.source_id.is_(None),
        )
        .values(source_id=first.c.first_id)
    )
    db.session.commit()
    return rowcount(result)


def _waiting(request_id: object, after: object) -> list[ColumnElement[bool]]:
    """A queued image of the request, past ``after`` (the cursor: an id, or the column), that no
    earlier image shares its URL with: the images the window has yet to reach."""
    return [i.request_id == request_id, i.id > after, i.state == _QUEUED, i.source_id.is_(None)]


def open_window(request_id: str, size: int) -> list[int]:
    """Hand up to ``size`` more of the request's queued images to the queue: their ids, to enqueue."""
    cursor = db.session.scalar(select(r.queued_through).where(r.id == request_id))
    ids = list(
        db.session.scalars(select(i.id).where(*_waiting(request_id, cursor or 0)).order_by(i.id).limit(size)).all()
    )
    if not ids:
        db.session.commit()
        return []
    moved = db.session.execute(
        update(_requests)
        .where(r.id == request_id, r.queued_through.is_not_distinct_from(cursor))
        .values(queued_through=ids[-1])
    )
    if rowcount(moved) != 1:  # another caller opened it meanwhile: its ids are in the queue
        db.session.rollback()
        return []
    db.session.commit()
    return ids


def next_in_window(request_id: str) -> int | None:
    """Move the request's window on by one image: the id to enqueue, or None when none is left
    (or the request was cancelled). Concurrent callers each get another image: the request's row is
    locked while the cursor moves (PostgreSQL; SQLite has one writer at a time), and the UPDATE
    only moves a cursor nobody moved meanwhile."""
    for _ in range(_TRIES):
        row = db.session.execute(
            select(r.queued_through, r.cancelled_at).where(r.id == request_id).with_for_update()
        ).first()
        if row is None or row.cancelled_at is not None:
            db.session.commit()
            return None
        nxt: int | None = db.session.scalar(
            select(func.min(i.id)).where(*_waiting(request_id, row.queued_through or 0))
        )
        if nxt is None:
            db.session.commit()
            return None
        moved = db.session.execute(
            update(_requests)
            .where(r.id == request_id, r.queued_through.is_not_distinct_from(row.queued_through))
            .values(queued_through=nxt)
        )
        db.session.commit()
        if rowcount(moved) == 1:
            return nxt
    return None  # lost every race: the turn is dropped, and the sweep reopens a window left empty


def stalled_requests() -> list[str]:
    """Requests with images left to queue but none in their window: a task that should have moved
    it on was lost (only asked when the task queue is empty, so none is on its way)."""
    in_window = exists().where(
        i.request_id == r.id,
        i.id <= r.queued_through,
        i.state.in_((_QUEUED, _PROCESSING)),
        i.source_id.is_(None),
    )
    ids = db.session.scalars(
        select(r.id).where(
            r.enqueued_at.is_not(None),
            r.finished_at.is_(None),
            r.cancelled_at.is_(None),
            r.queued_through.is_not(None),
            ~in_window,
            exists().where(*_waiting(r.id, func.coalesce(r.queued_through, 0))),
        )
    ).all()
    db.session.commit()
    return list(ids)

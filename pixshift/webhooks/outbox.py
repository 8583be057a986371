"""The outbox: a finished request's event and one delivery per receiver, written in the transaction
that finishes it, so an event exists if and only if its request finished.

The receivers are the upload's ``webhook_url`` (signed with ``PIXSHIFT_WEBHOOK_SECRET``) and every
enabled registered endpoint of the request's owner (signed with its own secret).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from pixshift.db.extensions import db
from pixshift.db.models import (
    DeliveryState,
    ImageCounts,
    Request,
    RequestState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    iso,
    utcnow,
)


def event_type(state: str) -> str:
    if state == RequestState.CANCELLED.value:
        return "request.cancelled"
    return "request.failed" if state == RequestState.FAILED.value else "request.completed"


def create_event(req: Request, counts: ImageCounts, base_url: str) -> list[int]:
    """Write the request's event and its deliveries in the caller's transaction; returns delivery ids.

    The caller finishes the request in the same transaction, so the event exists if and only if
    the request finished, and the unique (request_id, run) stops a second one for the same run at
    the database; a retry of the failed images is a new run with an event of its own.
    """
    event_id = "msg_" + uuid.uuid4().hex
    now = utcnow()
    payload = {
        "type": event_type(req.state),
        "timestamp": now.isoformat(),
        "data": {
            "request_id": req.id,
            "run": req.run,
            "state": req.state,
            "counts": counts,
            "created_at": iso(req.created_at),
            "finished_at": iso(req.finished_at),
            "status_url": f"{base_url}/status/{req.id}",
            "output_csv_url": f"{base_url}/requests/{req.id}/output.csv",
        },
    }
    db.session.add(
        WebhookEvent(
            id=event_id,
            request_id=req.id,
            run=req.run,
            type=payload["type"],
            payload=json.dumps(payload, separators=(",", ":")),
            created_at=now,
        )
    )
    deliveries = []
    if req.webhook_url:
        deliveries.append(WebhookDelivery(event_id=event_id, url=req.webhook_url, next_attempt_at=now))
    endpoints = db.session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.disabled_at.is_(None),
            WebhookEndpoint.owner.is_(None) if req.owner is None else WebhookEndpoint.owner == req.owner,
        )
    ).all()
    deliveries += [
        WebhookDelivery(event_id=event_id, endpoint_id=e.id, url=e.url, next_attempt_at=now) for e in endpoints
    ]
    db.session.add_all(deliveries)
    db.session.flush()
    return [d.id for d in deliveries]


def overdue_deliveries(now: datetime, grace: float = 60.0) -> list[int]:
    """Pending deliveries whose task is late by ``grace``: it was lost (a worker died); enqueue again."""
    ids = db.session.scalars(
        select(WebhookDelivery.id).where(
            WebhookDelivery.state == DeliveryState.PENDING.value,
            WebhookDelivery.next_attempt_at < now - timedelta(seconds=grace),
            or_(WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now),
        )
    ).all()
    db.session.commit()
    return list(ids)


def resend(delivery: WebhookDelivery, enqueue: Callable[[int], object]) -> None:
    """Send a delivery again by hand, with the same webhook-id; the schedule starts over."""
    delivery.state = DeliveryState.PENDING.value
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    delivery.lease_expires_at = None
    db.session.commit()
    enqueue(delivery.id)

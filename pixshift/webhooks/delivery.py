"""A delivery's state machine: each attempt claimed with a lease, made, recorded, and the
delivery closed or scheduled again.

A duplicated task cannot send twice at once: an attempt is made only by whoever claimed it.
2xx delivers; ``410 Gone`` disables the endpoint; anything else waits for the next slot of the
schedule, and fails once the schedule is used up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update

from pixshift.db.extensions import db
from pixshift.db.models import (
    DeliveryAttempt,
    DeliveryState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    iso,
    utcnow,
)
from pixshift.net.fetch import FetchPolicy
from pixshift.webhooks.sending import post_event

# Jitter from a generator of our own: the random module's shared state belongs to whoever seeds it.
_jitter = random.Random()

# How long a claimed attempt's lease outlives its POST's deadline (name resolution, bookkeeping).
_LEASE_MARGIN = 60.0


@dataclass(frozen=True)
class WebhookSettings:
    secret: str | None  # signs deliveries to per-upload URLs
    timeout: float  # one attempt, every phase included
    schedule: tuple[float, ...]  # seconds between attempts; after the last, the delivery fails


def attempt_delivery(delivery_id: int, settings: WebhookSettings, policy: FetchPolicy) -> float | None:
    """Make one attempt if the delivery is due and nobody else is attempting it.

    The claim's lease outlives the POST's deadline (``settings.timeout`` over the whole call), so
    the sweep never starts a second attempt beside a running one, and a claim is refused once
    the schedule's attempts are used. No database connection is held during the POST.
    Returns the seconds until the next attempt when one is scheduled, else None.
    """
    now = utcnow()
    d = WebhookDelivery
    claimed = db.session.execute(
        update(d)
        .where(
            d.id == delivery_id,
            d.state == DeliveryState.PENDING.value,
            d.next_attempt_at <= now,
            d.attempts <= len(settings.schedule),
            or_(d.lease_expires_at.is_(None), d.lease_expires_at < now),
        )
        .values(attempts=d.attempts + 1, lease_expires_at=now + timedelta(seconds=settings.timeout + _LEASE_MARGIN))
        .returning(d.attempts)
    ).first()
    if claimed is None:
        db.session.commit()
        return None
    attempt = claimed.attempts
    row = db.session.execute(
        select(
            d.url,
            WebhookEvent.id,
            WebhookEvent.payload,
            WebhookEndpoint.id.label("endpoint_id"),
            WebhookEndpoint.secret,
            WebhookEndpoint.disabled_at,
        )
        .join(WebhookEvent, WebhookEvent.id == d.event_id)
        .outerjoin(WebhookEndpoint, WebhookEndpoint.id == d.endpoint_id)
        .where(d.id == delivery_id)
    ).one()
    db.session.commit()  # the connection goes back to the pool before the receiver is called
    if row.endpoint_id is not None and row.disabled_at is not None:
        _close(delivery_id, attempt, DeliveryState.FAILED, "the endpoint is disabled or deleted")
        return None
    secret = row.secret if row.endpoint_id is not None else settings.secret
    status, error, latency_ms = post_event(row.url, row.id, row.payload.encode(), secret, policy, settings.timeout)
    db.session.add(DeliveryAttempt(delivery_id=delivery_id, status_code=status, latency_ms=latency_ms, error=error))

    if status is not None and 200 <= status < 300:
        _close(delivery_id, attempt, DeliveryState.DELIVERED, None)
        return None
    if status == 410:
        if row.endpoint_id is not None:
            db.session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == row.endpoint_id)
                .values(disabled_at=utcnow(), disabled_reason="the receiver answered 410 Gone")
            )
        _close(delivery_id, attempt, DeliveryState.FAILED, "the receiver answered 410 Gone; endpoint disabled")
        return None
    reason = error or f"the receiver answered {status}"
    if error is not None and not error.startswith(("timeout", "connection_failed")):
        _close(delivery_id, attempt, DeliveryState.FAILED, reason)  # blocked or invalid: retrying cannot help
        return None
    if attempt > len(settings.schedule):
        _close(delivery_id, attempt, DeliveryState.FAILED, f"{reason}; gave up after {attempt} attempts")
        return None
    delay: float = settings.schedule[attempt - 1] * _jitter.uniform(0.9, 1.1)  # jitter spreads a burst of retries
    db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == attempt)
        .values(next_attempt_at=utcnow() + timedelta(seconds=delay), lease_expires_at=None, last_error=reason)
    )
    db.session.commit()
    return delay


def _close(delivery_id: int, attempt: int, state: DeliveryState, error: str | None) -> None:
    db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == attempt)
        .values(
            state=state.value,
            lease_expires_at=None,
            last_error=error,
            delivered_at=utcnow() if state == DeliveryState.DELIVERED else None,
        )
    )
    db.session.commit()


def delivery_doc(delivery: WebhookDelivery) -> dict[str, object]:
    """What a status document shows of a delivery: its state and every attempt."""
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event.type,
        "url": delivery.url,
        "endpoint_id": delivery.endpoint_id,
        "state": delivery.state,
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.state == DeliveryState.PENDING.value else None,
        "delivered_at": iso(delivery.delivered_at),
        "last_error": delivery.last_error,
        "attempts": [
            {"at": iso(a.attempted_at), "status_code": a.status_code, "latency_ms": a.latency_ms, "error": a.error}
            for a in delivery.attempt_log
        ],
    }

"""Webhooks receivers can trust: signed per Standard Webhooks, retried on a schedule, logged.

An event is written in the same transaction that finishes its request (an outbox), with one
delivery per receiver: the upload's ``webhook_url`` (signed with ``PIXSHIFT_WEBHOOK_SECRET``)
and every enabled registered endpoint of the request's owner (signed with its own secret).
A delivery is attempted by a task; each attempt is claimed with a lease, so a duplicated task
cannot send twice at once, and recorded. 2xx delivers; ``410 Gone`` disables the endpoint;
anything else waits for the next slot of the schedule, and fails once the schedule is used up.
The ``webhook-id`` is the event's id, the same on every retry, so receivers can drop duplicates.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from sqlalchemy import or_, select, update

from pixshift.db.extensions import db
from pixshift.db.models import (
    DeliveryAttempt,
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
from pixshift.failures import DeliveryFailure, InvalidInput, UrlRefused
from pixshift.net import deadlines, outbound
from pixshift.net.fetch import FetchPolicy
from pixshift.net.urls import url_problem

# How long a claimed attempt's lease outlives its POST's deadline (name resolution, bookkeeping).
_LEASE_MARGIN = 60.0


@dataclass(frozen=True)
class WebhookSettings:
    secret: str | None  # signs deliveries to per-upload URLs
    timeout: float  # one attempt, every phase included
    schedule: tuple[float, ...]  # seconds between attempts; after the last, the delivery fails


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, the key being the base64 after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


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
    status, error, latency_ms = _post(row.url, row.id, row.payload.encode(), secret, settings, policy)
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
    delay: float = settings.schedule[attempt - 1] * random.uniform(0.9, 1.1)  # jitter spreads a burst of retries
    db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == attempt)
        .values(next_attempt_at=utcnow() + timedelta(seconds=delay), lease_expires_at=None, last_error=reason)
    )
    db.session.commit()
    return delay


def _post(
    url: str, event_id: str, body: bytes, secret: str | None, settings: WebhookSettings, policy: FetchPolicy
) -> tuple[int | None, str | None, int]:
    timestamp = int(time.time())
    headers = {"webhook-id": event_id, "webhook-timestamp": str(timestamp)}
    if secret:
        headers["webhook-signature"] = sign(secret, event_id, timestamp, body)
    started = time.monotonic()
    try:
        status, error = post_json(url, body, headers, policy, settings.timeout), None
    except (DeliveryFailure, UrlRefused) as failure:
        status, error = None, f"{failure.code}: {failure.message}"
    return status, error, round(1000 * (time.monotonic() - started))


def post_json(url: str, body: bytes, headers: dict[str, str], policy: FetchPolicy, timeout: float) -> int:
    """POST ``body`` to a receiver's URL under the address rule; returns the status code.

    One attempt, no redirects followed (a receiver that moved must be re-registered); the
    caller owns retries. ``timeout`` bounds the whole attempt: connecting, sending and the
    receiver's status line and headers. Raises UrlRefused for invalid, blocked or unreachable
    receivers and DeliveryFailure ``timeout`` for slow ones.
    """
    host = outbound.validate_url(url, "webhook URL").hostname or ""
    slow = DeliveryFailure("timeout", f"{host} did not answer within {timeout:g} s", retryable=True)
    with deadlines.limit(time.monotonic() + timeout) as limit:
        try:
            response = outbound.session(policy.allow_private).post(
                url,
                data=body,
                allow_redirects=False,
                stream=True,
                headers={"Content-Type": "application/json", "User-Agent": policy.user_agent, **headers},
                timeout=(min(policy.connect_timeout, timeout), timeout),
            )
        except outbound.InvalidIPAddress as exc:
            raise outbound.blocked(exc.args[0] if exc.args else "?", host) from None
        except requests.RequestException as exc:
            if limit.expired or isinstance(exc, requests.exceptions.Timeout):
                raise slow from None
            raise outbound.connection_failure(exc, host) from None
        response.close()  # the receiver's body is not needed
        if limit.expired:  # headers cut short by the deadline end like complete ones
            raise slow
    return response.status_code


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


def resend(delivery: WebhookDelivery, enqueue: Callable[[int], object]) -> None:
    """Send a delivery again by hand, with the same webhook-id; the schedule starts over."""
    delivery.state = DeliveryState.PENDING.value
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    delivery.lease_expires_at = None
    db.session.commit()
    enqueue(delivery.id)


def register_endpoint(url: object, description: object, *, owner: str | None, allow_private: bool) -> WebhookEndpoint:
    """Validate and store an endpoint (the form and the API share this rule); raises InvalidInput.

    Each refusal keeps the API's stable code and message and carries ``for_people``: the same
    refusal in words for the web page's form."""
    url = _clean_text(url, 2048)
    text = _clean_text(description, 255) if description is not None else None  # the same string, if valid
    if url is None or (description is not None and text is None):
        raise _refused(
            "invalid_body",
            'send JSON like {"url": "https://…", "description": "…"} '
            "(text without NUL, description at most 255 characters)",
            "Enter a web address of at most 2048 characters and a description of at most 255.",
        )
    url = url.strip()
    if problem := url_problem(url):
        raise _refused("invalid_webhook_url", f"url: {problem}", ENTER_A_FULL_URL)
    try:
        outbound.check_public_url(url, allow_private)
    except UrlRefused as refused:
        if refused.code == "connection_failed":
            words = "No server by that name could be found. Check the address for typing mistakes."
        elif refused.code == "blocked_address":
            words = "PixShift only sends webhooks to public internet addresses; that one is on a private network."
        else:
            words = ENTER_A_FULL_URL
        raise _refused("invalid_webhook_url", f"url: {refused.message}", words) from None
    taken = db.session.scalar(
        select(WebhookEndpoint.id).where(
            WebhookEndpoint.url == url,
            WebhookEndpoint.owner.is_(None) if owner is None else WebhookEndpoint.owner == owner,
            WebhookEndpoint.deleted_at.is_(None),
        )
    )
    if taken is not None:
        raise _refused("duplicate_webhook_url", DUPLICATE_URL, DUPLICATE_URL)
    endpoint = WebhookEndpoint(
        id=str(uuid.uuid4()), url=url, description=(text or "").strip()[:255] or None, secret=new_secret(), owner=owner
    )
    db.session.add(endpoint)
    db.session.commit()
    return endpoint


ENTER_A_FULL_URL = "Enter a full web address starting with https://, like https://example.com/hooks/pixshift."
DUPLICATE_URL = "That URL is already registered."


class EndpointRefused(InvalidInput):
    """A refused registration: the API's code and message, and ``for_people`` for the form."""

    def __init__(self, code: str, message: str, for_people: str) -> None:
        super().__init__(code, message)
        self.for_people = for_people


_refused = EndpointRefused


def _clean_text(value: object, limit: int) -> str | None:
    """A string fit to store: UTF-8 encodable, no NUL (PostgreSQL refuses it), at most ``limit``
    characters; None when ``value`` is not such a string."""
    if not isinstance(value, str) or "\x00" in value or len(value) > limit:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON escapes
        return None
    return value


def delete_endpoint(endpoint: WebhookEndpoint) -> None:
    """Stop sending to it; the row stays so past deliveries still say where they went."""
    now = utcnow()
    endpoint.deleted_at = now
    endpoint.disabled_at = endpoint.disabled_at or now
    endpoint.disabled_reason = endpoint.disabled_reason or "deleted"
    db.session.commit()


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


def delivery_doc(delivery: WebhookDelivery) -> dict[str, object]:
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


def endpoint_doc(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict[str, object]:
    doc: dict[str, object] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "created_at": iso(endpoint.created_at),
        "enabled": endpoint.disabled_at is None,
        "disabled_reason": endpoint.disabled_reason,
    }
    if with_secret:
        doc["secret"] = endpoint.secret
    return doc

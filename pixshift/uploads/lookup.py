"""Finding what a caller names by id, one rule for the API and the pages alike.

A malformed id is invalid input; an id that does not exist, or that belongs to a tenant the caller
may not see, is not found (the same answer, so ids of others cannot be probed). ``can_see`` is the
caller's visibility rule (``security.can_see``): services know no HTTP request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import select

from pixshift.db.extensions import db
from pixshift.db.models import Image, Product, Request, WebhookDelivery, WebhookEndpoint
from pixshift.failures import InvalidInput, NotFinished, NotFound
from pixshift.imaging.formats import mime_type_of_extension
from pixshift.uploads.csv_input import MAX_SERIAL
from pixshift.uploads.reporting import MEDIA_NAME, is_finished, media_key, media_name

CanSee = Callable[[str | None], bool]
MAX_ID = 2**63 - 1  # ids beyond a 64-bit column cannot exist: not found, not a database error


def find_request(request_id: str, can_see: CanSee) -> Request:
    try:
        request_id = str(uuid.UUID(request_id))  # any spelling of a UUID finds the request
    except ValueError:
        raise InvalidInput("invalid_request_id", f"{request_id[:80]!r} is not a request id") from None
    req = db.session.get(Request, request_id)
    if req is None or not can_see(req.owner):
        raise NotFound("request_not_found", f"no request with id {request_id}")
    return req


def finished_request(request_id: str, can_see: CanSee, action: str) -> Request:
    """The request if it has finished; else NotFinished naming what waits for it."""
    req = find_request(request_id, can_see)
    if not is_finished(req):
        raise NotFinished(
            "not_finished", f"request {req.id} is {req.state}; {action} once every image is done or failed"
        )
    return req


def find_endpoint(endpoint_id: str, can_see: CanSee) -> WebhookEndpoint:
    endpoint = db.session.get(WebhookEndpoint, endpoint_id) if _is_uuid(endpoint_id) else None
    if endpoint is None or endpoint.deleted_at is not None or not can_see(endpoint.owner):
        raise NotFound("webhook_not_found", f"no webhook endpoint with id {endpoint_id[:80]}")
    return endpoint


def find_delivery(delivery_id: int, can_see: CanSee) -> WebhookDelivery:
    delivery = db.session.get(WebhookDelivery, delivery_id) if delivery_id <= MAX_ID else None
    if delivery is None or not can_see(delivery.event.request.owner if delivery.event.request else None):
        raise NotFound("delivery_not_found", f"no webhook delivery with id {delivery_id}")
    return delivery


def visible_endpoints(can_see: CanSee) -> list[WebhookEndpoint]:
    return [
        e
        for e in db.session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.deleted_at.is_(None)).order_by(WebhookEndpoint.created_at)
        ).all()
        if can_see(e.owner)
    ]


def find_media(request_id: str, name: str) -> tuple[str, str]:
    """The stored object behind a public media name (``<serial>-<n>[-input][-thumb].<ext>``) and
    its MIME type. Media URLs need no token (output CSVs feed systems that hold none)."""
    match = MEDIA_NAME.match(name)
    if not match or not _is_uuid(request_id):
        raise NotFound("not_found", "no such file")
    serial, n, is_input, is_thumb, ext = match.groups()
    if int(serial) > MAX_SERIAL or int(n) > 100_000:
        raise NotFound("not_found", "no such file")
    image = db.session.execute(
        select(Image)
        .join(Product)
        .where(
            Image.request_id == str(uuid.UUID(request_id)),
            Product.serial_number == int(serial),
            Image.position == int(n) - 1,
        )
    ).scalar_one_or_none()
    key = image and media_key(image, input=bool(is_input), thumb=bool(is_thumb))
    if image is None or not key or media_name(int(serial), image, input=bool(is_input), thumb=bool(is_thumb)) != name:
        raise NotFound("not_found", "no such file (the image may not be processed yet)")
    return key, mime_type_of_extension(ext)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False

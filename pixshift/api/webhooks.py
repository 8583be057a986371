"""Registered webhook endpoints (POST/GET/DELETE /api/webhooks) and re-sending a delivery by hand."""
from __future__ import annotations

import uuid

from flask import current_app, request
from sqlalchemy import select

from ..csv_input import url_problem
from ..errors import UrlRefused
from ..extensions import db
from ..outbound import check_public_url
from ..models import WebhookDelivery, WebhookEndpoint
from ..security import can_see, current_owner
from ..webhooks import delete_endpoint, endpoint_doc, new_secret, resend
from . import bp
from .errors import clean_text, error_response
from .routes import MAX_ID, is_uuid


def register_endpoint(url: str, description: str | None) -> WebhookEndpoint | tuple:
    """Validate and store an endpoint; the form and the API share this rule."""
    url = (url or "").strip()
    if problem := url_problem(url):
        return error_response(400, "invalid_webhook_url", f"url: {problem}")
    try:
        check_public_url(url, current_app.extensions["pixshift"].fetch_policy.allow_private)
    except UrlRefused as failure:
        return error_response(400, "invalid_webhook_url", f"url: {failure.message}")
    endpoint = WebhookEndpoint(id=str(uuid.uuid4()), url=url, description=(description or "").strip()[:255] or None,
                               secret=new_secret(), owner=current_owner())
    db.session.add(endpoint)
    db.session.commit()
    return endpoint


def visible_endpoints() -> list[WebhookEndpoint]:
    return [e for e in db.session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.deleted_at.is_(None))
                                          .order_by(WebhookEndpoint.created_at)).all()
            if can_see(e.owner)]


@bp.post("/api/webhooks")
def create_webhook():
    body = request.get_json(silent=True)
    url = clean_text(body.get("url"), 2048) if isinstance(body, dict) else None
    description = body.get("description") if isinstance(body, dict) else None
    if url is None or (description is not None and clean_text(description, 255) is None):
        return error_response(400, "invalid_body", 'send JSON like {"url": "https://…", "description": "…"} '
                                                   "(text without NUL, description at most 255 characters)")
    endpoint = register_endpoint(url, description)
    if not isinstance(endpoint, WebhookEndpoint):
        return endpoint
    return endpoint_doc(endpoint, with_secret=True), 201


@bp.get("/api/webhooks")
def list_webhooks():
    return {"endpoints": [endpoint_doc(e) for e in visible_endpoints()]}


@bp.delete("/api/webhooks/<endpoint_id>")
def delete_webhook(endpoint_id: str):
    endpoint = db.session.get(WebhookEndpoint, endpoint_id) if is_uuid(endpoint_id) else None
    if endpoint is None or endpoint.deleted_at is not None or not can_see(endpoint.owner):
        return error_response(404, "webhook_not_found", f"no webhook endpoint with id {endpoint_id[:80]}")
    delete_endpoint(endpoint)
    return "", 204


@bp.post("/api/deliveries/<int:delivery_id>/resend")
def resend_delivery(delivery_id: int):
    delivery = db.session.get(WebhookDelivery, delivery_id) if delivery_id <= MAX_ID else None
    if delivery is None or not can_see(delivery.event.request.owner if delivery.event.request else None):
        return error_response(404, "delivery_not_found", f"no webhook delivery with id {delivery_id}")
    resend(delivery)
    from tasks import deliver_webhook
    deliver_webhook(delivery_id)
    return {"id": delivery_id, "state": delivery.state}, 202

"""Registered webhook endpoints (POST/GET/DELETE /api/webhooks) and re-sending a delivery by hand."""

from __future__ import annotations

from flask import request

from pixshift.pipeline.tasks import deliver_webhook
from pixshift.uploads.lookup import find_delivery, find_endpoint, visible_endpoints
from pixshift.web.api.blueprint import bp
from pixshift.web.request_context import allow_private_urls
from pixshift.web.security import can_see, current_owner
from pixshift.webhooks.endpoints import delete_endpoint, endpoint_doc, register_endpoint
from pixshift.webhooks.outbox import resend


@bp.post("/api/webhooks")
def create_webhook():
    body = request.get_json(silent=True)
    body = body if isinstance(body, dict) else {}
    endpoint = register_endpoint(
        body.get("url"), body.get("description"), owner=current_owner(), allow_private=allow_private_urls()
    )
    return endpoint_doc(endpoint, with_secret=True), 201


@bp.get("/api/webhooks")
def list_webhooks():
    return {"endpoints": [endpoint_doc(e) for e in visible_endpoints(can_see)]}


@bp.delete("/api/webhooks/<endpoint_id>")
def delete_webhook(endpoint_id: str):
    delete_endpoint(find_endpoint(endpoint_id, can_see))
    return "", 204


@bp.post("/api/deliveries/<int:delivery_id>/resend")
def resend_delivery(delivery_id: int):
    delivery = find_delivery(delivery_id, can_see)
    resend(delivery, deliver_webhook)
    return {"id": delivery_id, "state": delivery.state}, 202

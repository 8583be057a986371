"""Live progress for browsers: bus events relayed into one Socket.IO room per request.

A client joins a request's room and first gets a snapshot (counts, request state, the states
of the images on its page), then batches of changes. Events are coalesced per request every
``interval`` seconds, so a request with thousands of images sends a few small messages a second,
not one per image. Every web process relays the bus to its own clients (``ignore_queue``), so
with several processes each client still gets each batch exactly once.
"""

from __future__ import annotations

import time
import uuid

from flask import Flask, current_app
from flask_socketio import emit, join_room
from sqlalchemy import select

from pixshift.db.extensions import db, socketio
from pixshift.db.models import Image, Product, Request
from pixshift.pipeline.processing import image_counts
from pixshift.web.security import session_owner

RELAY_INTERVAL = 0.2


@socketio.on("connect")
def on_connect(auth=None):
    if current_app.config["API_TOKENS"] and not session_owner():
        return False  # refuse: pages log in first
    return None


@socketio.on("join")
def on_join(data):
    data = data if isinstance(data, dict) else {}
    request_id = str(data.get("request_id", ""))
    try:
        uuid.UUID(request_id)
    except ValueError:
        emit("error", {"error": "invalid_request_id"})
        return
    req = db.session.get(Request, request_id)
    tokens = current_app.config["API_TOKENS"]
    if req is None or (tokens and req.owner != session_owner()):
        emit("error", {"error": "request_not_found"})
        return
    join_room(request_id)
    page = data.get("page") if isinstance(data.get("page"), int) and data.get("page") > 0 else 1
    emit("snapshot", snapshot(req, page, current_app.config["STATUS_PAGE_SIZE"]))
    db.session.commit()


def snapshot(req: Request, page: int, per_page: int) -> dict:
    first = (page - 1) * per_page
    rows = db.session.execute(
        select(Image.id, Image.state, Image.error_message)
        .join(Product)
        .where(Image.request_id == req.id, Product.position >= first, Product.position < first + per_page)
    ).all()
    return {
        "request_id": req.id,
        "state": req.state,
        "counts": image_counts(req.id),
        "images": {str(i): {"state": s, "error_message": m} for i, s, m in rows},
    }


def relay(app: Flask, interval: float = RELAY_INTERVAL) -> None:
    """Forever: relay the bus, resubscribing after a failure (a Redis restart, say): browsers keep
    their page and, on their next event or reconnect, the current state."""
    while True:
        try:
            _relay_subscription(app, interval)
        except Exception:
            app.logger.warning("progress relay lost the event bus; resubscribing", exc_info=True)
            time.sleep(1.0)


def _relay_subscription(app: Flask, interval: float) -> None:
    """Read the bus, merge events per request, emit a batch per room each interval.

    Counts and the request's state are read once per batch here rather than carried by every
    image event, so a worker finishing an image costs no count query.
    """
    subscription = app.extensions["pixshift"].bus.subscribe()
    pending: dict[str, dict] = {}
    next_flush = time.monotonic() + interval
    while True:
        item = subscription.get(max(0.0, next_flush - time.monotonic()))
        if item is not None:
            request_id, event = item
            batch = pending.setdefault(request_id, {"request_id": request_id, "images": {}})
            if event.get("type") == "image":
                batch["images"][str(event["image_id"])] = {
                    "state": event["state"],
                    "error_message": event.get("error_message"),
                }
            elif event.get("type") == "request":
                batch["state"] = event["state"]
                batch["counts"] = event["counts"]
        if time.monotonic() >= next_flush:
            if pending:
                _flush(app, pending)
            pending.clear()
            next_flush = time.monotonic() + interval


def _flush(app: Flask, pending: dict[str, dict]) -> None:
    with app.app_context():
        try:
            states = dict(
                db.session.execute(select(Request.id, Request.state).where(Request.id.in_(list(pending)))).all()
            )
            for request_id, batch in pending.items():
                batch.setdefault("counts", image_counts(request_id))
                batch.setdefault("state", states.get(request_id))
            db.session.commit()
        except Exception:  # a database blip costs this batch its counts, not the relay
            app.logger.warning("could not read counts for progress events", exc_info=True)
            db.session.rollback()
    for request_id, batch in pending.items():
        socketio.emit("progress", batch, to=request_id, ignore_queue=True)


def start_relay(app: Flask) -> None:
    """Run the relay beside the web server (threads or greenlets, whichever Socket.IO uses)."""
    socketio.start_background_task(relay, app)

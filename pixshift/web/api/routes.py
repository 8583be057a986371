"""POST /upload, GET /status/<id>, DELETE /requests/<id>, health checks."""

from __future__ import annotations

import threading
import time
from typing import cast

from flask import Response, current_app, request

from pixshift.db.extensions import db
from pixshift.db.models import Request
from pixshift.db.schema import check_schema
from pixshift.failures import InvalidInput
from pixshift.pipeline.tasks import deliver_webhook, huey, start_request
from pixshift.uploads.actions import cancel_request, retry_request
from pixshift.uploads.deletion import delete_request as remove_request
from pixshift.uploads.intake import accept_upload
from pixshift.uploads.lookup import find_request, finished_request
from pixshift.uploads.reporting import is_finished, page_count, request_status, request_summary
from pixshift.web.api.blueprint import bp
from pixshift.web.request_context import public_base, upload_limits
from pixshift.web.security import can_see, current_owner


@bp.post("/upload")
def upload():
    file = request.files.get("file")
    accepted = accept_upload(
        None if file is None else file.stream,
        None if file is None else file.filename,
        request.form.get("webhook_url"),
        limits=upload_limits(),
        owner=current_owner(),
        base_url=public_base(),
        enqueue=start_request,
    )
    status_url = f"{public_base()}/status/{accepted.request_id}"
    return (
        {
            "request_id": accepted.request_id,
            "status_url": status_url,
            "state": "queued",
            "products": accepted.products,
            "images": accepted.images,
        },
        202,
        {"Location": status_url},
    )


@bp.get("/status/<request_id>")
def status(request_id: str):
    req = find_request(request_id, can_see)
    page = _int_arg("page", 1)
    per_page = _int_arg("per_page", current_app.config["STATUS_PAGE_SIZE"])
    if (
        page is None
        or per_page is None
        or not 1 <= per_page <= MAX_PER_PAGE
        or not 1 <= page <= page_count(req, per_page)
    ):
        raise InvalidInput(
            "invalid_page", f"page must be a whole number from 1 to the last page and per_page from 1 to {MAX_PER_PAGE}"
        )
    ttl = current_app.config["STATUS_CACHE_SECONDS"]
    if ttl <= 0 or is_finished(req):  # a finished request's page is always fresh (webhook states change)
        return request_status(req, public_base(), page, per_page)
    return _cached_page(req, page, per_page, ttl)


MAX_PER_PAGE = 500

# Rendered status pages of unfinished requests, kept for STATUS_CACHE_SECONDS: a hundred clients
# polling a big request once a second then cost one render a second, not a hundred (a page of 100
# products is ~180 kB of JSON and ~10 ms of CPU). Per process; visibility is checked before it.
# A page is rendered by one request at a time: when it expires, the others get the page it
# replaces; when there is none yet (its first poll), they wait for the render under way. Without
# that, every poll arriving during a render rendered too, and under load renders slowed each other
# until a p99 of ~0.1 s became ~5 s (bench, embedded default).
_page_cache: dict[tuple, tuple[float, bytes]] = {}
_rendering: dict[tuple, threading.Event] = {}  # pages being rendered -> set when done
_page_cache_lock = threading.Lock()
_PAGE_CACHE_MAX = 256
_FIRST_RENDER_WAIT = 10.0  # seconds a poll waits for another's first render before rendering itself


def _cached_page(req: Request, page: int, per_page: int, ttl: float):
    key = (req.id, page, per_page, public_base())
    now = time.monotonic()
    with _page_cache_lock:
        hit = _page_cache.get(key)
        done = _rendering.get(key)
        render = (hit is None or hit[0] <= now) and done is None
        if render:
            done = _rendering[key] = threading.Event()
    if not render and hit is None:
        assert done is not None  # nothing to serve yet, and not ours to render: another poll renders it
        done.wait(_FIRST_RENDER_WAIT)
        with _page_cache_lock:
            hit = _page_cache.get(key)
    if render or hit is None:  # ours to render, or the render we waited for failed
        try:
            rendered = current_app.json.response(request_status(req, public_base(), page, per_page))
            body = cast(Response, rendered).get_data()  # the app's response class, a werkzeug Response
            with _page_cache_lock:
                if len(_page_cache) >= _PAGE_CACHE_MAX:
                    for stale in [k for k, (expires, _) in _page_cache.items() if expires <= now] or list(_page_cache):
                        del _page_cache[stale]
                _page_cache[key] = hit = (time.monotonic() + ttl, body)
        finally:
            if render and done is not None:
                with _page_cache_lock:
                    del _rendering[key]
                done.set()
    return current_app.response_class(hit[1], mimetype="application/json")


def _int_arg(name: str, default: int) -> int | None:
    """A query parameter as a small whole number; None when it is not one (so it is a 400, not ignored)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None


@bp.delete("/requests/<request_id>")
def delete_request(request_id: str):
    req = finished_request(request_id, can_see, "it can be deleted")
    removed = remove_request(req, current_app.extensions["pixshift"].store)
    current_app.logger.info("deleted request %s and %d stored objects", request_id, removed)
    return "", 204


@bp.post("/requests/<request_id>/retry")
def retry(request_id: str):
    """Queue a finished request's failed and cancelled images again, as a new run."""
    req = find_request(request_id, can_see)
    retried = retry_request(req, current_app.extensions["pixshift"].bus)
    try:
        start_request(req.id)
    except Exception:  # the retry is recorded: the sweep runs a fan-out whose task was lost
        current_app.logger.exception("could not enqueue the retry of request %s", req.id)
    db.session.refresh(req)
    return {**request_summary(req, public_base()), "retried": retried}, 202


@bp.post("/requests/<request_id>/cancel")
def cancel(request_id: str):
    """Stop a queued or processing request; it ends ``cancelled`` when its images in flight end."""
    req = find_request(request_id, can_see)
    for delivery_id in cancel_request(req, current_app.extensions["pixshift"]):
        deliver_webhook(delivery_id)
    db.session.refresh(req)
    return request_summary(req, public_base()), 202


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    checks = {}
    for name, check in (
        ("database", check_schema),
        ("media", current_app.extensions["pixshift"].store.check),
        ("queue", _check_queue),
    ):
        try:
            check()
            checks[name] = "ok"
        except Exception:  # report every failing dependency; details go to the log, not to strangers
            current_app.logger.warning("readiness check %s failed", name, exc_info=True)
            checks[name] = "error"
    ok = all(v == "ok" for v in checks.values())
    return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503


def _check_queue() -> None:
    huey.pending_count()

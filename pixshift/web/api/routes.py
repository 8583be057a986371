"""POST /upload, GET /status/<id>, DELETE /requests/<id>, health checks."""

from __future__ import annotations

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
from pixshift.web.api import status_cache
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
    # Running requests' pages are cached (status_cache); a finished request's page is always fresh,
    # since its webhook deliveries' states still change.
    if ttl <= 0 or is_finished(req):
        return request_status(req, public_base(), page, per_page)
    return _cached_page(req, page, per_page, ttl)


MAX_PER_PAGE = 500


def _cached_page(req: Request, page: int, per_page: int, ttl: float):
    def render() -> bytes:
        rendered = current_app.json.response(request_status(req, public_base(), page, per_page))
        return cast(Response, rendered).get_data()  # the app's response class, a werkzeug Response

    body = status_cache.cached_page((req.id, page, per_page, public_base()), ttl, render)
    return current_app.response_class(body, mimetype="application/json")


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

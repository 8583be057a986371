"""POST /upload, GET /status/<id>, health checks."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from flask import current_app, request, url_for
from sqlalchemy import text
from werkzeug.datastructures import FileStorage

from ..csv_input import CsvRejected, Limits, parse_products, url_problem
from ..extensions import db
from ..intake import create_request
from ..models import Request
from ..reporting import request_status
from ..security import can_see, current_owner
from . import bp
from .errors import error_response


def public_base() -> str:
    """Where clients reach us: PUBLIC_BASE_URL, or the URL this client used."""
    return current_app.config["PUBLIC_BASE_URL"] or request.url_root.rstrip("/")


def load_request(request_id: str) -> Request | tuple:
    try:
        uuid.UUID(request_id)
    except ValueError:
        return error_response(400, "invalid_request_id", f"{request_id[:80]!r} is not a request id")
    req = db.session.get(Request, request_id)
    if req is None or not can_see(req.owner):
        return error_response(404, "request_not_found", f"no request with id {request_id}")
    return req


@dataclass(frozen=True)
class Accepted:
    request_id: str
    products: int
    images: int


def accept_upload(upload: FileStorage | None, webhook_url: str | None) -> Accepted | tuple:
    """Validate, store and enqueue one CSV: the API and the upload page share this path."""
    if upload is None:
        return error_response(400, "missing_file", "send the CSV as a multipart form field named 'file'")
    webhook_url = (webhook_url or "").strip() or None
    if webhook_url and (problem := url_problem(webhook_url)):
        return error_response(400, "invalid_webhook_url", f"webhook_url: {problem}")
    c = current_app.config
    limits = Limits(max_rows=c["MAX_ROWS"], max_images=c["MAX_IMAGES_PER_REQUEST"],
                    max_urls_per_row=c["MAX_URLS_PER_ROW"])
    try:
        rows = parse_products(upload.read(), limits)
    except CsvRejected as rejected:
        return error_response(400, "invalid_csv", "the CSV was not accepted; nothing was stored",
                              details=[p.as_dict() for p in rejected.problems], truncated=rejected.truncated)
    request_id = create_request(rows, filename=upload.filename, webhook_url=webhook_url, owner=current_owner(),
                                base_url=public_base())
    from tasks import start_request  # web enqueues through the task layer
    try:
        start_request(request_id)
    except Exception:
        current_app.logger.exception("could not enqueue request %s", request_id)
        db.session.delete(db.session.get(Request, request_id))
        db.session.commit()
        response = error_response(503, "queue_unavailable", "the work queue is unreachable; nothing was stored")
        response[0].headers["Retry-After"] = "10"
        return response
    return Accepted(request_id, len(rows), sum(len(r.urls) for r in rows))


@bp.post("/upload")
def upload():
    accepted = accept_upload(request.files.get("file"), request.form.get("webhook_url"))
    if not isinstance(accepted, Accepted):
        return accepted
    status_url = f"{public_base()}{url_for('api.status', request_id=accepted.request_id)}"
    return {"request_id": accepted.request_id, "status_url": status_url, "state": "queued",
            "products": accepted.products, "images": accepted.images}, 202, {"Location": status_url}


@bp.get("/status/<request_id>")
def status(request_id: str):
    req = load_request(request_id)
    if not isinstance(req, Request):
        return req
    default = current_app.config["STATUS_PAGE_SIZE"]
    page = request.args.get("page", 1, type=int)
    per_page = request.args.get("per_page", default, type=int)
    if page < 1 or not 1 <= per_page <= 1000:
        return error_response(400, "invalid_page", "page must be >= 1 and per_page between 1 and 1000")
    return request_status(req, public_base(), page, per_page)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    checks = {}
    for name, check in (("database", lambda: db.session.execute(text("select 1"))),
                        ("media", current_app.extensions["pixshift"].store.check),
                        ("queue", _check_queue)):
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # report every failing dependency, not just the first
            checks[name] = f"error: {type(exc).__name__}: {exc}"
    ok = all(v == "ok" for v in checks.values())
    return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503


def _check_queue() -> None:
    from tasks import huey
    huey.pending_count()

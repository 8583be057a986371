"""POST /upload, GET /status/<id>, health checks."""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

from flask import current_app, request
from werkzeug.datastructures import FileStorage

from ..csv_input import CsvRejected, Limits, read_products, url_problem, validate
from ..extensions import db
from ..intake import create_request
from ..models import Request
from ..deletion import delete_request as remove_request
from ..reporting import is_finished, request_status
from ..schema import check_schema
from ..security import can_see, current_owner
from . import bp
from .errors import error_response


def public_base() -> str:
    """Where clients reach us: PUBLIC_BASE_URL, or the URL this client used."""
    return current_app.config["PUBLIC_BASE_URL"] or request.url_root.rstrip("/")


MAX_ID = 2**63 - 1  # ids in URLs beyond a 64-bit column cannot exist: 404, not a database error


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


def load_request(request_id: str) -> Request | tuple:
    try:
        request_id = str(uuid.UUID(request_id))  # any spelling of a UUID finds the request
    except ValueError:
        return error_response(400, "invalid_request_id", f"{request_id[:80]!r} is not a request id")
    req = db.session.get(Request, request_id)
    if req is None or not can_see(req.owner):
        return error_response(404, "request_not_found", f"no request with id {request_id}")
    return req


def load_finished_request(request_id: str, action: str) -> Request | tuple:
    """The request if it has finished; else 409 with Retry-After, naming what waits for it."""
    req = load_request(request_id)
    if isinstance(req, Request) and not is_finished(req):
        response = error_response(409, "not_finished", f"request {req.id} is {req.state}; {action} once every image "
                                                       "is done or failed")
        response[0].headers["Retry-After"] = "5"
        return response
    return req


# Uploads checked and stored at once by this process; the others wait their turn with their file
# already received (a slow sender holds no slot) and no database connection. Checking a CSV is
# Python (the GIL) and storing it writes to the database (one writer at a time on SQLite): twenty
# uploads at once finished no sooner than two at a time, but every status poll meanwhile waited
# for the GIL behind twenty busy threads instead of two (bench: status beside uploads).
_upload_slots = threading.BoundedSemaphore(2)


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
    # Two passes over the uploaded file (a seekable spooled temporary file): check everything first,
    # then insert as it is read again. No list of every row is held.
    with _upload_slots:
        try:
            totals = validate(upload.stream, limits)
        except CsvRejected as rejected:
            return error_response(400, "invalid_csv", "the CSV was not accepted; nothing was stored",
                                  details=[p.as_dict() for p in rejected.problems], truncated=rejected.truncated)
        request_id = create_request(read_products(upload.stream), filename=upload.filename,
                                    webhook_url=webhook_url, owner=current_owner(), base_url=public_base())
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
    return Accepted(request_id, totals.products, totals.images)


@bp.post("/upload")
def upload():
    accepted = accept_upload(request.files.get("file"), request.form.get("webhook_url"))
    if not isinstance(accepted, Accepted):
        return accepted
    status_url = f"{public_base()}/status/{accepted.request_id}"
    return {"request_id": accepted.request_id, "status_url": status_url, "state": "queued",
            "products": accepted.products, "images": accepted.images}, 202, {"Location": status_url}


@bp.get("/status/<request_id>")
def status(request_id: str):
    req = load_request(request_id)
    if not isinstance(req, Request):
        return req
    page = _int_arg("page", 1)
    per_page = _int_arg("per_page", current_app.config["STATUS_PAGE_SIZE"])
    pages = max(1, -(-req.product_count // per_page)) if per_page else 0
    if page is None or per_page is None or not 1 <= per_page <= MAX_PER_PAGE or not 1 <= page <= pages:
        return error_response(400, "invalid_page", f"page must be a whole number from 1 to the last page "
                                                   f"and per_page from 1 to {MAX_PER_PAGE}")
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
        done.wait(_FIRST_RENDER_WAIT)
        with _page_cache_lock:
            hit = _page_cache.get(key)
    if render or hit is None:  # ours to render, or the render we waited for failed
        try:
            body = current_app.json.response(request_status(req, public_base(), page, per_page)).get_data()
            with _page_cache_lock:
                if len(_page_cache) >= _PAGE_CACHE_MAX:
                    for stale in [k for k, (expires, _) in _page_cache.items() if expires <= now] or list(_page_cache):
                        del _page_cache[stale]
                _page_cache[key] = hit = (time.monotonic() + ttl, body)
        finally:
            if render:
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
    req = load_finished_request(request_id, "it can be deleted")
    if not isinstance(req, Request):
        return req
    removed = remove_request(req, current_app.extensions["pixshift"].store)
    current_app.logger.info("deleted request %s and %d stored objects", request_id, removed)
    return "", 204


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    checks = {}
    for name, check in (("database", check_schema),
                        ("media", current_app.extensions["pixshift"].store.check),
                        ("queue", _check_queue)):
        try:
            check()
            checks[name] = "ok"
        except Exception:  # report every failing dependency; details go to the log, not to strangers
            current_app.logger.warning("readiness check %s failed", name, exc_info=True)
            checks[name] = "error"
    ok = all(v == "ok" for v in checks.values())
    return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503


def _check_queue() -> None:
    from tasks import huey
    huey.pending_count()

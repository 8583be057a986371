"""Page routes: thin callers of the same services and helpers the JSON API uses."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    get_template_attribute,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from markupsafe import Markup
from sqlalchemy import func, select

from pixshift.db.extensions import db
from pixshift.db.models import Image, Request
from pixshift.failures import Failure
from pixshift.pipeline.tasks import deliver_webhook, start_request
from pixshift.uploads.actions import cancel_request, retry_request
from pixshift.uploads.csv_input import COLUMNS, CsvRejected
from pixshift.uploads.intake import accept_upload
from pixshift.uploads.lookup import find_delivery, find_endpoint, find_request, visible_endpoints
from pixshift.uploads.reporting import byte_totals, is_finished, page_count, request_status
from pixshift.web.pages.forms import ActionForm, LoginForm, UploadForm, WebhookForm
from pixshift.web.request_context import allow_private_urls, public_base, upload_limits
from pixshift.web.security import can_see, current_owner, safe_next
from pixshift.web.security import login as login_with
from pixshift.webhooks.endpoints import delete_endpoint, endpoint_doc, register_endpoint
from pixshift.webhooks.outbox import resend

bp = Blueprint("web", __name__)

SAMPLE_CSV = (
    ",".join(COLUMNS) + "\r\n"
    '1,Red sneaker,"https://images.example.com/sneaker-front.jpg, https://images.example.com/sneaker-side.jpg"\r\n'
    "2,Canvas tote,https://images.example.com/tote.png\r\n"
)


# Words for people; the API keeps the stable codes.
STATE_WORDS = {
    "queued": "Queued",
    "processing": "Processing",
    "completed": "Completed",
    "completed_with_errors": "Completed with errors",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "done": "Done",
    "enabled": "Enabled",
    "disabled": "Disabled",
    "pending": "Pending",
    "delivered": "Delivered",
}


@bp.app_template_filter("state_words")
def state_words(state: object) -> str:
    text = str(state or "")
    return STATE_WORDS.get(text, text.replace("_", " ").capitalize())


@bp.app_template_filter("when")
def when(value: datetime | str | None) -> Markup:
    """A <time> a person can read ("2 Dec 2026, 17:43 UTC"); static/app.js shows it in their time zone."""
    if value is None:
        return Markup("")
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    text = f"{moment.day} {moment:%b %Y, %H:%M} UTC"
    return Markup('<time class="local" datetime="{}">{}</time>').format(moment.isoformat(), text)


def _wants_json() -> bool:
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


@bp.route("/", methods=["GET", "POST"])
def index():
    form = UploadForm()
    errors: list[dict] = []
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                accepted = accept_upload(
                    form.file.data.stream,
                    form.file.data.filename,
                    form.webhook_url.data,
                    limits=upload_limits(),
                    owner=current_owner(),
                    base_url=public_base(),
                    enqueue=start_request,
                )
            except CsvRejected as rejected:
                status, errors = 400, [p.as_dict() for p in rejected.problems]
            except Failure as failure:  # the form shows why; the errors blueprint would show a bare page
                status = 503 if failure.code == "queue_unavailable" else 400
                errors = [{"row": None, "column": None, "message": failure.message}]
            else:
                _remember(accepted.request_id)
                target = url_for("web.request_page", request_id=accepted.request_id)
                if _wants_json():
                    return {"request_id": accepted.request_id, "redirect": target}, 202
                return redirect(target, code=303)
        else:
            status = 400
            errors = [
                {"row": None, "column": None, "message": m}
                for field_errors in form.errors.values()
                for m in field_errors
            ]
        if _wants_json():
            return jsonify(error="invalid_upload", details=errors), status
    config = current_app.config
    limits = {
        "bytes": _size(config["MAX_CONTENT_LENGTH"]),
        "rows": f"{config['MAX_ROWS']:,}",
        "images": f"{config['MAX_IMAGES_PER_REQUEST']:,}",
        "urls_per_row": f"{config['MAX_URLS_PER_ROW']:,}",
    }
    return render_template(
        "upload.html", form=form, errors=errors, max_bytes=config["MAX_CONTENT_LENGTH"], limits=limits
    ), status


def _size(n: int) -> str:
    """Bytes as people read them, in the same units as static/upload.js: 32 MB, 256 KB."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f}".removesuffix(".0") + " MB"
    return f"{-(-n // 1024)} KB"


RECENT = 50


def _remember(request_id: str) -> None:
    """Keep the ids this browser uploaded (signed session cookie) for its /requests page."""
    session["recent"] = [request_id, *session.get("recent", [])][:RECENT]


@bp.get("/sample.csv")
def sample_csv():
    return Response(
        SAMPLE_CSV, mimetype="text/csv", headers={"Content-Disposition": 'attachment; filename="pixshift-sample.csv"'}
    )


def _page_doc(request_id: str) -> dict:
    req = find_request(request_id, can_see)
    per_page = current_app.config["STATUS_PAGE_SIZE"]
    raw = request.args.get("page", "1")
    page = min(int(raw), page_count(req, per_page)) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else 1
    doc = request_status(req, public_base(), max(1, page), per_page)
    doc["totals"] = byte_totals(req.id)
    doc["readable"] = {k: _readable_utc(doc[k]) for k in ("created_at", "started_at", "finished_at")}
    return doc


def _readable_utc(value: object) -> str | None:
    """ "2 Dec 2026, 17:43 UTC": what the page shows until its script puts the reader's local time."""
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%-d %b %Y, %H:%M UTC")


@bp.get("/requests/<request_id>")
def request_page(request_id: str):
    return render_template(
        "request.html", doc=_page_doc(request_id), action_form=ActionForm(), readable_utc=_readable_utc
    )


@bp.get("/requests/<request_id>/results")
def request_results(request_id: str):
    """The results section alone (every tile of the page, the CSV link and webhook deliveries),
    fetched by the live page when the request ends; with ``actions=1`` it also carries the
    summary's buttons as they are now (Retry, once there is something to retry)."""
    return render_template(
        "_results.html",
        doc=_page_doc(request_id),
        action_form=ActionForm(),
        fresh_actions=request.args.get("actions") == "1",
        readable_utc=_readable_utc,
    )


TILES_AT_ONCE = 200


@bp.get("/requests/<request_id>/tiles")
def request_tiles(request_id: str):
    """Fresh tiles for some images of the page (``ids=1,2,3``), as HTML rendered by the same macro
    as the page, plus the request's byte totals: what the live page fetches as images finish."""
    wanted = {int(i) for i in request.args.get("ids", "").split(",")[:TILES_AT_ONCE] if i.isascii() and i.isdigit()}
    doc = _page_doc(request_id)
    tile = get_template_attribute("_results.html", "tile")
    tiles = {str(im["id"]): str(tile(p, im)) for p in doc["items"] for im in p["images"] if im["id"] in wanted}
    return jsonify(tiles=tiles, totals=doc["totals"], counts=doc["counts"], state=doc["state"])


@bp.post("/requests/<request_id>/actions/cancel")
def request_cancel(request_id: str):
    if not ActionForm().validate_on_submit():
        abort(404)
    req = find_request(request_id, can_see)
    try:
        for delivery_id in cancel_request(req, current_app.extensions["pixshift"]):
            deliver_webhook(delivery_id)
    except Failure as failure:
        flash(failure.message)
    else:
        flash("Cancelled: no new image of this request will start.")
    return redirect(url_for("web.request_page", request_id=req.id), code=303)


@bp.post("/requests/<request_id>/actions/retry")
def request_retry(request_id: str):
    if not ActionForm().validate_on_submit():
        abort(404)
    req = find_request(request_id, can_see)
    try:
        retried = retry_request(req, current_app.extensions["pixshift"].bus)
    except Failure as failure:
        flash(failure.message)
    else:
        start_request(req.id)
        flash(f"Retrying {retried} image{'s' if retried != 1 else ''}.")
    return redirect(url_for("web.request_page", request_id=req.id), code=303)


@bp.get("/requests")
def requests_list():
    """With tokens: the token's requests. Without: only those uploaded from this browser, since
    request ids are then the only secret and a public list would hand them out."""
    query = select(Request).order_by(Request.created_at.desc()).limit(RECENT)
    if current_app.config["API_TOKENS"]:
        query = query.where(Request.owner == current_owner())
    else:
        query = query.where(Request.id.in_(session.get("recent", [])))
    reqs = db.session.scalars(query).all()
    counts: dict[str, dict[str, int]] = {}
    if reqs:
        for request_id, state, n in db.session.execute(
            select(Image.request_id, Image.state, func.count())
            .where(Image.request_id.in_([r.id for r in reqs]))
            .group_by(Image.request_id, Image.state)
        ):
            counts.setdefault(request_id, {})[state] = n
    return render_template("requests.html", reqs=reqs, counts=counts, is_finished=is_finished)


@bp.route("/webhooks", methods=["GET", "POST"])
def webhooks():
    """Post/redirect/get: a registration redirects (303) to this page, which shows the new
    endpoint's secret once (kept in the signed session cookie until then), so a reload registers
    nothing."""
    form = WebhookForm()
    status = 200
    if form.validate_on_submit():
        try:
            endpoint = register_endpoint(
                form.url.data, form.description.data, owner=current_owner(), allow_private=allow_private_urls()
            )
        except Failure as failure:
            form.url.errors.append(getattr(failure, "for_people", failure.message))
            status = 400
        else:
            session["new_endpoint"] = {"id": endpoint.id, "url": endpoint.url, "secret": endpoint.secret}
            return redirect(url_for("web.webhooks"), code=303)
    elif request.method == "POST":
        status = 400
    created = session.pop("new_endpoint", None) if request.method == "GET" else None
    return render_template(
        "webhooks.html",
        form=form,
        created=created,
        action_form=ActionForm(),
        endpoints=[endpoint_doc(e) for e in visible_endpoints(can_see)],
    ), status


@bp.post("/webhooks/<endpoint_id>/delete")
def webhook_delete(endpoint_id: str):
    """Deleting takes a confirmation: the page's <dialog> (static/webhooks.js) sends ``confirm=yes``;
    without it (no JavaScript) this answers with a page asking to confirm."""
    form = ActionForm()
    if not form.validate_on_submit():
        abort(404)
    endpoint = find_endpoint(endpoint_id, can_see)
    if request.form.get("confirm") != "yes":
        return render_template("webhook_delete.html", endpoint=endpoint, action_form=form)
    delete_endpoint(endpoint)
    flash(f"Deleted the endpoint {endpoint.url}.")
    return redirect(url_for("web.webhooks"), code=303)


@bp.post("/deliveries/<int:delivery_id>/resend")
def delivery_resend(delivery_id: int):
    if not ActionForm().validate_on_submit():
        abort(404)
    delivery = find_delivery(delivery_id, can_see)
    request_id = delivery.event.request_id
    resend(delivery, deliver_webhook)
    flash("The webhook will be sent again.")
    return redirect(url_for("web.request_page", request_id=request_id) + "#webhooks", code=303)


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        if login_with(form.token.data):
            return redirect(safe_next(request.args.get("next", "")), code=303)
        form.token.errors.append("That token is not valid.")
    return render_template("login.html", form=form), 200 if request.method == "GET" else 400

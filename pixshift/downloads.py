"""File downloads: the output CSV and the stored images at their stable public names."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, send_file, stream_with_context
from sqlalchemy import select

from .api.errors import error_response
from .api.routes import load_request, public_base
from .csv_input import MAX_SERIAL
from .extensions import db
from .models import Image, Product, Request
from .reporting import MEDIA_NAME, MIME_TYPES, is_finished, media_key, media_name, output_csv_lines

bp = Blueprint("downloads", __name__)


@bp.get("/requests/<request_id>/output.csv")
def output_csv(request_id: str):
    req = load_request(request_id)
    if not isinstance(req, Request):
        return req
    if not is_finished(req):
        response = error_response(409, "not_finished", f"request {req.id} is {req.state}; the CSV is ready when "
                                                       "every image is done or failed")
        response[0].headers["Retry-After"] = "5"
        return response
    lines = output_csv_lines(req, public_base())
    return Response(stream_with_context(lines), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="pixshift-{req.id}.csv"'})


@bp.get("/media/<request_id>/<name>")
def media(request_id: str, name: str):
    match = MEDIA_NAME.match(name)
    if not match:
        return error_response(404, "not_found", "no such file")
    serial, n, is_input, is_thumb, ext = match.groups()
    if int(serial) > MAX_SERIAL or int(n) > 100_000:
        return error_response(404, "not_found", "no such file")
    image = db.session.execute(
        select(Image).join(Product).where(Image.request_id == request_id, Product.serial_number == int(serial),
                                          Image.position == int(n) - 1)
    ).scalar_one_or_none()
    key = image and media_key(image, input=bool(is_input), thumb=bool(is_thumb))
    if not key or media_name(int(serial), image, input=bool(is_input), thumb=bool(is_thumb)) != name:
        return error_response(404, "not_found", "no such file (the image may not be processed yet)")
    store = current_app.extensions["pixshift"].store
    if not store.exists(key):
        current_app.logger.error("media %s of request %s is missing from the store", key, request_id)
        return error_response(503, "media_unavailable", "the file is not reachable in the media store right now")
    # Content-addressed: the bytes behind a key never change, so caches may keep them for good.
    response = send_file(store.path(key), mimetype=MIME_TYPES.get(ext, "application/octet-stream"),
                         etag=key, conditional=True, max_age=31536000)
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response

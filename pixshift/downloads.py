"""File downloads: the output CSV and the stored images at their stable public names."""
from __future__ import annotations

import uuid

from flask import Blueprint, Response, current_app, redirect, request, stream_with_context
from sqlalchemy import select

from .api.errors import error_response
from .api.routes import is_uuid, load_finished_request, public_base
from .csv_input import MAX_SERIAL
from .extensions import db
from .models import Image, Product, Request
from .formats import mime_type_of_extension
from .reporting import MEDIA_NAME, media_key, media_name, output_csv_lines

bp = Blueprint("downloads", __name__)


@bp.get("/requests/<request_id>/output.csv")
def output_csv(request_id: str):
    req = load_finished_request(request_id, "the CSV is ready")
    if not isinstance(req, Request):
        return req
    lines = output_csv_lines(req, public_base())
    return Response(stream_with_context(lines), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="pixshift-{req.id}.csv"'})


@bp.get("/media/<request_id>/<name>")
def media(request_id: str, name: str):
    match = MEDIA_NAME.match(name)
    if not match:
        return error_response(404, "not_found", "no such file")
    serial, n, is_input, is_thumb, ext = match.groups()
    if int(serial) > MAX_SERIAL or int(n) > 100_000 or not is_uuid(request_id):
        return error_response(404, "not_found", "no such file")
    image = db.session.execute(
        select(Image).join(Product).where(Image.request_id == str(uuid.UUID(request_id)), Product.serial_number == int(serial),
                                          Image.position == int(n) - 1)
    ).scalar_one_or_none()
    key = image and media_key(image, input=bool(is_input), thumb=bool(is_thumb))
    if not key or media_name(int(serial), image, input=bool(is_input), thumb=bool(is_thumb)) != name:
        return error_response(404, "not_found", "no such file (the image may not be processed yet)")
    return serve_media(key, mime_type_of_extension(ext))


def serve_media(key: str, mimetype: str):
    """Stream a stored object, or redirect to a presigned URL, per PIXSHIFT_MEDIA_DELIVERY.

    Content-addressed: the bytes behind a key never change, so the key is the ETag and caches may
    keep them for good. Byte ranges are served from the store without reading the whole object.
    """
    store = current_app.extensions["pixshift"].store
    headers = {"ETag": f'"{key}"', "Cache-Control": "public, max-age=31536000, immutable",
               "Accept-Ranges": "bytes"}
    if request.if_none_match.contains(key):
        return Response(status=304, headers=headers)
    if current_app.config["MEDIA_DELIVERY"] == "presigned":
        url = store.presigned_url(key, current_app.config["PRESIGN_SECONDS"], mimetype)
        if url:
            return redirect(url, code=302)
    try:
        if request.range is not None:
            size = store.size(key)
            span = request.range.range_for_length(size)
            if span is None:
                return Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
            blob = store.get(key, *span)
            headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{size}"
            headers["Content-Length"] = str(span[1] - span[0])
            return Response(blob.chunks, status=206, mimetype=mimetype, headers=headers, direct_passthrough=True)
        blob = store.get(key)
        headers["Content-Length"] = str(blob.size)
        return Response(blob.chunks, mimetype=mimetype, headers=headers, direct_passthrough=True)
    except FileNotFoundError:
        current_app.logger.error("media %s is missing from the store", key)
        return error_response(503, "media_unavailable", "the file is not reachable in the media store right now")
    except Exception:
        current_app.logger.warning("media store error for %s", key, exc_info=True)
        return error_response(503, "media_unavailable", "the media store cannot be reached right now")

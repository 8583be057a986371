"""File downloads: the output CSV and the stored images at their stable public names."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, redirect, request, stream_with_context

from pixshift.failures import Unavailable
from pixshift.uploads.lookup import find_media, finished_request
from pixshift.uploads.reporting import output_csv_disposition, output_csv_lines
from pixshift.web.request_context import public_base
from pixshift.web.security import can_see

bp = Blueprint("downloads", __name__)


@bp.get("/requests/<request_id>/output.csv")
def output_csv(request_id: str):
    req = finished_request(request_id, can_see, "the CSV is ready")
    lines = output_csv_lines(req, public_base())
    return Response(
        stream_with_context(lines),
        mimetype="text/csv",
        headers={"Content-Disposition": output_csv_disposition(req)},
    )


@bp.get("/media/<request_id>/<name>")
def media(request_id: str, name: str):
    return serve_media(*find_media(request_id, name))


def serve_media(key: str, mimetype: str):
    """Stream a stored object, or redirect to a presigned URL, per PIXSHIFT_MEDIA_DELIVERY.

    Content-addressed: the bytes behind a key never change, so the key is the ETag and caches may
    keep them for good. Byte ranges are served from the store without reading the whole object.
    """
    store = current_app.extensions["pixshift"].store
    headers = {"ETag": f'"{key}"', "Cache-Control": "public, max-age=31536000, immutable", "Accept-Ranges": "bytes"}
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
        raise Unavailable("media_unavailable", "the file is not reachable in the media store right now") from None
    except Exception:
        current_app.logger.warning("media store error for %s", key, exc_info=True)
        raise Unavailable("media_unavailable", "the media store cannot be reached right now") from None

"""What a request looks like from outside: the status document, media names and the output CSV.

URLs are built here from a base URL the caller passes (``PUBLIC_BASE_URL`` or the URL the client
used), so the status API, the pages and the output CSV always agree.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from flask import current_app
from sqlalchemy import func, select

from pixshift.db.extensions import db
from pixshift.db.models import FINISHED_REQUEST_STATES, Image, ImageState, Product, Request, WebhookEvent, iso
from pixshift.imaging import formats
from pixshift.pipeline.processing import image_counts
from pixshift.uploads.csv_input import COLUMNS
from pixshift.webhooks.delivery import delivery_doc

OUTPUT_COLUMN = "Output Image URLs"
# <serial>-<n>[-input][-thumb].<ext>, n counting images of the product from 1.
MEDIA_NAME = re.compile(rf"^(\d{{1,19}})-(\d{{1,6}})(-input)?(-thumb)?\.({'|'.join(formats.EXTENSIONS)})$")


def is_finished(req: Request) -> bool:
    return req.state in {s.value for s in FINISHED_REQUEST_STATES}


class ImageFields(Protocol):
    """What the media helpers read of an image: an Image, or a read-only row of its columns."""

    @property
    def position(self) -> int: ...
    @property
    def input_format(self) -> str | None: ...
    @property
    def output_format(self) -> str | None: ...
    @property
    def input_key(self) -> str | None: ...
    @property
    def output_key(self) -> str | None: ...
    @property
    def input_thumb_key(self) -> str | None: ...
    @property
    def output_thumb_key(self) -> str | None: ...

    @property
    def state(self) -> str: ...


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


if TYPE_CHECKING:
    from sqlalchemy import Row

    # A row of select(*Image.__table__.columns): SQLAlchemy types its columns as Any.
    ImageRow = Row[*tuple[Any, ...]]
    UrlMaker = Callable[[int, ImageRow], tuple[str, str, str, str]]


def media_name(serial: int, image: ImageFields, *, input: bool = False, thumb: bool = False) -> str:
    """The stable public file name of one stored file of an image (thumbnails follow the output format)."""
    fmt = image.input_format if input and not thumb else image.output_format
    kind = ("-input" if input else "") + ("-thumb" if thumb else "")
    return f"{serial}-{image.position + 1}{kind}.{formats.extension(fmt)}"


def media_key(image: ImageFields, *, input: bool, thumb: bool) -> str | None:
    if input:
        return image.input_thumb_key if thumb else image.input_key
    return image.output_thumb_key if thumb else image.output_key


def media_url(
    base: str, request_id: str, serial: int, image: ImageFields, *, input: bool = False, thumb: bool = False
) -> str:
    """Where a client gets one stored file: PixShift's stable URL (it streams, or redirects to a
    presigned URL), or with PIXSHIFT_MEDIA_DELIVERY=public the object's own public URL."""
    config = current_app.config
    if config["MEDIA_DELIVERY"] == "public":
        store = current_app.extensions["pixshift"].store
        return f"{config['MEDIA_PUBLIC_BASE_URL']}/{store.public_path(media_key(image, input=input, thumb=thumb))}"
    return f"{base}/media/{request_id}/{media_name(serial, image, input=input, thumb=thumb)}"


def output_url(base: str, request_id: str, serial: int, image: ImageFields) -> str | None:
    if image.state != ImageState.DONE.value:
        return None
    return media_url(base, request_id, serial, image)


def request_summary(req: Request, base: str) -> dict[str, object]:
    counts = image_counts(req.id)
    return {
        "request_id": req.id,
        "state": req.state,
        "filename": req.filename,
        "created_at": iso(req.created_at),
        "started_at": iso(req.started_at),
        "finished_at": iso(req.finished_at),
        "cancelled_at": iso(req.cancelled_at),
        "run": req.run,
        "products": req.product_count,
        "counts": counts,
        "webhook_url": req.webhook_url,
        "links": {
            "status": f"{base}/status/{req.id}",
            "output_csv": f"{base}/requests/{req.id}/output.csv" if is_finished(req) else None,
        },
        "webhooks": _webhook_deliveries(req.id),
    }


def _webhook_deliveries(request_id: str) -> list[dict[str, object]]:
    """Every run's deliveries, oldest run first (a retry of failed images is a new run)."""
    events = db.session.scalars(
        select(WebhookEvent).where(WebhookEvent.request_id == request_id).order_by(WebhookEvent.run)
    ).all()
    return [delivery_doc(d) for event in events for d in event.deliveries]


def byte_totals(request_id: str) -> dict[str, object]:
    """Bytes in and out of the request's done images (the whole request, not one page)."""
    row = db.session.execute(
        select(
            func.count(), func.coalesce(func.sum(Image.input_bytes), 0), func.coalesce(func.sum(Image.output_bytes), 0)
        ).where(Image.request_id == request_id, Image.state == ImageState.DONE.value)
    ).one()
    n, bytes_in, bytes_out = row[0], row[1] or 0, row[2] or 0
    saved = round(100 * (1 - bytes_out / bytes_in), 1) if bytes_in else None
    return {"images": n, "input_bytes": bytes_in, "output_bytes": bytes_out, "saved_percent": saved}


def page_count(req: Request, per_page: int) -> int:
    """Pages of ``per_page`` products in the request (at least one, even when it has none)."""
    return max(1, -(-req.product_count // per_page))


def request_status(req: Request, base: str, page: int = 1, per_page: int = 100) -> dict[str, object]:
    """The summary plus one page of products with their images, in CSV order."""
    doc = request_summary(req, base)
    # Plain rows, not ORM objects: a page is read-only, and building 100 products and their
    # images as tracked instances cost most of the request.
    products = db.session.execute(
        select(Product.id, Product.serial_number, Product.name, Product.row)
        .where(Product.request_id == req.id)
        .order_by(Product.position)
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    images = _images_of(products)
    url = _url_maker(base, req.id)
    doc["items"] = [
        {
            "serial_number": p.serial_number,
            "name": p.name,
            "row": p.row,
            "images": [_image_doc(url, p.serial_number, im) for im in images.get(p.id, [])],
        }
        for p in products
    ]
    pages = page_count(req, per_page)
    doc["pagination"] = {
        "page": page,
        "per_page": per_page,
        "total_products": req.product_count,
        "pages": pages,
        "next": f"{base}/status/{req.id}?page={page + 1}&per_page={per_page}" if page < pages else None,
    }
    return doc


def _images_of(products: Sequence[_HasId]) -> dict[int, list[ImageRow]]:
    """The images of these products as read-only rows (attribute access like Image), by product id."""
    by_product: dict[int, list[ImageRow]] = {}
    if not products:
        return by_product
    rows = db.session.execute(
        select(*Image.__table__.columns)
        .where(Image.product_id.in_([p.id for p in products]))
        .order_by(Image.product_id, Image.position)
    ).all()
    for image in rows:
        by_product.setdefault(image.product_id, []).append(image)
    return by_product


def _url_maker(base: str, request_id: str) -> UrlMaker:
    """The four media URLs of an image (output, input thumbnail, output thumbnail, original), with
    the configuration read once per page rather than per URL; the same URLs media_url makes."""
    if current_app.config["MEDIA_DELIVERY"] == "public":
        return lambda serial, im: (
            media_url(base, request_id, serial, im),
            media_url(base, request_id, serial, im, input=True, thumb=True),
            media_url(base, request_id, serial, im, thumb=True),
            media_url(base, request_id, serial, im, input=True),
        )
    prefix = f"{base}/media/{request_id}/"

    def urls(serial: int, im: ImageRow) -> tuple[str, str, str, str]:
        return (
            prefix + media_name(serial, im),
            prefix + media_name(serial, im, input=True, thumb=True),
            prefix + media_name(serial, im, thumb=True),
            prefix + media_name(serial, im, input=True),
        )

    return urls


def _image_doc(url: UrlMaker, serial: int, im: ImageRow) -> dict[str, object]:
    done = im.state == ImageState.DONE.value
    output, input_thumb, output_thumb, original = url(serial, im)
    return {
        "id": im.id,
        "position": im.position + 1,
        "state": im.state,
        "reused": bool(im.reused),  # nothing was downloaded in full or compressed for it
        "input_url": im.input_url,
        "output_url": output if done else None,
        "input_bytes": im.input_bytes,
        "output_bytes": im.output_bytes,
        "saving_percent": round(100 * (1 - im.output_bytes / im.input_bytes), 1) if done else None,
        "quality": im.quality,
        "input": {
            "format": im.input_format,
            "width": im.input_width,
            "height": im.input_height,
            "sha256": im.input_key,
        },
        "output": {
            "format": im.output_format,
            "width": im.output_width,
            "height": im.output_height,
            "sha256": im.output_key,
            "scale": im.scale,
            "encodes": im.encodes,
        }
        if done
        else None,
        "notes": im.notes.split(",") if im.notes else [],
        "attempts": im.attempts,
        "error": {"code": im.error_code, "message": im.error_message} if im.error_code else None,
        "thumbnails": {"input": input_thumb, "output": output_thumb} if done else None,
        "original": original if im.input_key else None,
    }


def output_csv_lines(req: Request, base: str, batch: int = 500) -> Iterator[str]:
    """The output CSV, streamed a batch of products at a time; failed images keep their slot."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow([*COLUMNS, OUTPUT_COLUMN])
    yield flush()
    last_position = -1
    while True:
        products = db.session.scalars(
            select(Product)
            .where(Product.request_id == req.id, Product.position > last_position)
            .order_by(Product.position)
            .limit(batch)
        ).all()
        if not products:
            break
        images = _images_of(products)
        for p in products:
            ims = images.get(p.id, [])
            outputs = [output_url(base, req.id, p.serial_number, im) or _not_done(im) for im in ims]
            writer.writerow(
                [
                    escape_formula(str(p.serial_number)),
                    escape_formula(p.name),
                    escape_formula(", ".join(im.input_url for im in ims)),
                    escape_formula(", ".join(outputs)),
                ]
            )
        last_position = products[-1].position
        db.session.commit()
        yield flush()


def output_csv_disposition(req: Request) -> str:
    """``attachment`` named after the uploaded file (``spring catalog.csv`` ->
    ``spring catalog-output.csv``): an ASCII name for old clients and the real one in ``filename*``
    (RFC 6266); ``pixshift-<id>.csv`` when the upload had no usable name."""
    name = re.split(r"[/\\]", (req.filename or "").strip())[-1]
    stem = re.sub(r"\.csv$", "", name, flags=re.I).strip(" .")[:120]
    if not stem:
        return f'attachment; filename="pixshift-{req.id}.csv"'
    ascii_stem = re.sub(r"[^A-Za-z0-9._ -]+", "_", stem).strip(" ._") or f"pixshift-{req.id}"
    return f"attachment; filename=\"{ascii_stem}-output.csv\"; filename*=UTF-8''{quote(stem + '-output.csv', safe='')}"


def _not_done(image: ImageRow) -> str:
    """An output CSV slot without an image: CANCELLED, or FAILED:<error code>."""
    if image.state == ImageState.CANCELLED.value:
        return "CANCELLED"
    return f"FAILED:{image.error_code or image.state}"


def escape_formula(cell: str) -> str:
    """OWASP's rule against CSV formula injection: a leading = + - @ tab or CR is made text."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell

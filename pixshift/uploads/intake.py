"""Taking an upload: validate the CSV, store it as a request with its products and images in one
transaction, and enqueue it; all or nothing."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import IO, TYPE_CHECKING, cast

from sqlalchemy import select

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

from pixshift.db.extensions import db
from pixshift.db.models import ImageState, Product, Request
from pixshift.failures import InvalidInput, Unavailable
from pixshift.net.urls import url_problem
from pixshift.uploads.csv_input import Limits, ProductRow, read_products, validate

logger = logging.getLogger(__name__)

_BATCH = 1000  # products per statement: one batch of rows is held at a time, never the file


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


def accept_upload(
    stream: IO[bytes] | None,
    filename: str | None,
    webhook_url: str | None,
    *,
    limits: Limits,
    owner: str | None,
    base_url: str,
    enqueue: Callable[[str], object],
) -> Accepted:
    """Validate, store and enqueue one CSV (``stream`` seekable: it is read twice, nothing per row
    held). Raises InvalidInput, CsvRejected, or Unavailable when the queue is unreachable (then
    nothing stays stored)."""
    if stream is None:
        raise InvalidInput("missing_file", "send the CSV as a multipart form field named 'file'")
    webhook_url = (webhook_url or "").strip() or None
    if webhook_url and (problem := url_problem(webhook_url)):
        raise InvalidInput("invalid_webhook_url", f"webhook_url: {problem}")
    with _upload_slots:
        totals = validate(stream, limits)  # first pass: every problem, or CsvRejected
        request_id = create_request(
            read_products(stream), filename=filename, webhook_url=webhook_url, owner=owner, base_url=base_url
        )
    try:
        enqueue(request_id)
    except Exception:
        logger.exception("could not enqueue request %s", request_id)
        db.session.delete(db.session.get(Request, request_id))
        db.session.commit()
        raise Unavailable("queue_unavailable", "the work queue is unreachable; nothing was stored") from None
    return Accepted(request_id, totals.products, totals.images)


def create_request(
    rows: Iterable[ProductRow],
    *,
    filename: str | None,
    webhook_url: str | None,
    owner: str | None = None,
    base_url: str | None = None,
) -> str:
    """Insert the request and its products and images, all or nothing, and return its id (a random
    UUID: unguessable). ``rows`` may be an iterator over the upload (the second pass): it is
    inserted as it is read, in batches, so memory does not grow with the file."""
    request_id = str(uuid.uuid4())
    filename = "".join(c for c in (filename or "") if c.isprintable())[:255]  # no NUL or controls
    request = Request(
        id=request_id,
        filename=filename or None,
        webhook_url=webhook_url,
        owner=owner,
        base_url=base_url,
        product_count=0,
    )
    db.session.add(request)
    try:
        db.session.flush()
        postgresql = db.session.get_bind().dialect.name == "postgresql"
        counts = (_insert_postgresql if postgresql else _insert_sqlite)(request_id, rows)
        request.product_count = counts[0]  # known once the rows are read
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return request_id


def _batches(rows: Iterable[ProductRow]) -> Iterator[tuple[int, list[ProductRow]]]:
    """(position of the first, products) for up to _BATCH products at a time."""
    rows = iter(rows)
    position = 0
    while batch := list(islice(rows, _BATCH)):
        yield position, batch
        position += len(batch)


_PRODUCTS_SQL = 'INSERT INTO products (request_id, "position", "row", serial_number, name) VALUES (?, ?, ?, ?, ?)'
_IMAGES_SQL = (
    'INSERT INTO images (request_id, product_id, "position", input_url, state, attempts) VALUES (?, ?, ?, ?, ?, 0)'
)


def _insert_sqlite(request_id: str, rows: Iterable[ProductRow]) -> tuple[int, int]:
    """SQLite: executemany of plain tuples through the driver (SQLAlchemy's per-row parameter
    processing was a third of the upload). The batch's product ids are read back by position:
    RETURNING in parameter order would insert one product at a time."""
    connection = db.session.connection()
    queued = ImageState.QUEUED.value
    products = images = 0
    for start, batch in _batches(rows):
        connection.exec_driver_sql(
            _PRODUCTS_SQL, [(request_id, start + i, r.row, r.serial_number, r.name) for i, r in enumerate(batch)]
        )
        product_ids = db.session.scalars(
            select(Product.id)
            .where(Product.request_id == request_id, Product.position >= start)
            .order_by(Product.position)
        ).all()
        image_rows = [
            (request_id, pid, n, url, queued) for pid, r in zip(product_ids, batch) for n, url in enumerate(r.urls)
        ]
        connection.exec_driver_sql(_IMAGES_SQL, image_rows)
        products, images = products + len(batch), images + len(image_rows)
    return products, images


# One statement a batch: products from arrays, then their images joined to them by position. Ids
# ascend in file order as before (PostgreSQL sorts before it calls nextval), and binary arrays spare
# the server parsing thousands of quoted literals. (SQLAlchemy's multi-VALUES INSERTs had psycopg
# parse a query of thousands of placeholders: a third of the upload's time.)
_PG_INSERT = """
WITH p AS (
    INSERT INTO products (request_id, "position", "row", serial_number, name)
    SELECT %(request_id)b, u.* FROM unnest(%(position)b::integer[], %(row)b::integer[], %(serial_number)b::bigint[],
                                          %(name)b::text[]) AS u("position", "row", serial_number, name)
    ORDER BY u."position"
    RETURNING id, "position")
INSERT INTO images (request_id, product_id, "position", input_url, state, attempts)
SELECT %(request_id)b, p.id, i.n, i.url, %(state)b, 0
FROM unnest(%(product)b::integer[], %(n)b::integer[], %(url)b::text[]) WITH ORDINALITY AS i(product, n, url, k)
JOIN p ON p."position" = i.product
ORDER BY i.k
"""


def _insert_postgresql(request_id: str, rows: Iterable[ProductRow]) -> tuple[int, int]:
    """PostgreSQL (psycopg 3): the batches are pipelined, so the server inserts one batch while the
    next is read from the file; the server's work (indexes, foreign-key checks) is most of the time."""
    # Only called on PostgreSQL, whose dialect here is psycopg 3.
    connection = cast("psycopg.Connection[TupleRow]", db.session.connection().connection.driver_connection)
    products = images = 0
    with connection.pipeline(), connection.cursor() as cursor:
        for start, batch in _batches(rows):
            product: list[int] = []
            n: list[int] = []
            url: list[str] = []
            for position, r in enumerate(batch, start):
                product += [position] * len(r.urls)
                n += range(len(r.urls))
                url += r.urls
            cursor.execute(
                _PG_INSERT,
                {
                    "request_id": request_id,
                    "position": list(range(start, start + len(batch))),
                    "row": [r.row for r in batch],
                    "serial_number": [r.serial_number for r in batch],
                    "name": [r.name for r in batch],
                    "product": product,
                    "n": n,
                    "url": url,
                    "state": ImageState.QUEUED.value,
                },
            )
            products, images = products + len(batch), images + len(url)
    return products, images

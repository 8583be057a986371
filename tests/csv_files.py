"""Product CSVs for tests: written as a spreadsheet writes them, uploaded through Flask's test
client, and read back with the parser applied to a file held in memory, as /upload applies it to
the spooled upload (validate every row, then read the products: two passes)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from pixshift.uploads.csv_input import Limits, ProductRow, read_products, validate

CSV_HEADER = ["Serial Number", "Product Name", "Input Image URLs"]


def csv_text(rows: Iterable[tuple[int, str, Sequence[str]]], server=None) -> str:
    """A product CSV of (serial, name, urls) rows, as a person's spreadsheet writes it: a cell is
    quoted when it needs to be, a product's URLs are one cell joined by ", ". With ``server`` (an
    image server: ``harness.imageserver.ImageServer``), ``urls`` are paths on it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for serial, name, urls in rows:
        writer.writerow([serial, name, ", ".join(server.url(u) for u in urls) if server else ", ".join(urls)])
    return out.getvalue()


def numbered(
    urls_per_product: Iterable[Sequence[str]], name: str = "Product {}"
) -> list[tuple[int, str, Sequence[str]]]:
    """(serial, name, urls) rows numbered from 1, named ``name.format(serial)``."""
    return [(serial, name.format(serial), urls) for serial, urls in enumerate(urls_per_product, start=1)]


def post_csv(client, data: str | bytes, filename: str = "products.csv", webhook_url: str | None = None):
    """POST ``data`` to /upload as a browser's form does, through Flask's test client; the response.
    The body is encoded here, in memory: from a dict of files, werkzeug's test client spools a body
    past 500 kB to a temporary file it never closes (a ResourceWarning)."""
    fields: dict[str, object] = {
        "file": FileStorage(io.BytesIO(data.encode() if isinstance(data, str) else data), filename=filename)
    }
    if webhook_url:
        fields["webhook_url"] = webhook_url
    boundary, body = encode_multipart(fields)
    return client.post("/upload", data=body, content_type=f"multipart/form-data; boundary={boundary}")


def upload(client, data: str | bytes, filename: str = "products.csv", webhook_url: str | None = None) -> str:
    """The id of the request that uploading ``data`` through Flask's test client made (a 202)."""
    response = post_csv(client, data, filename, webhook_url)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["request_id"]


def parse_products(data: bytes, limits: Limits | None = None) -> list[ProductRow]:
    """Every product of ``data``, or CsvRejected."""
    stream = io.BytesIO(data)
    validate(stream, limits)
    return list(read_products(stream))

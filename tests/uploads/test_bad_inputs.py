"""Malformed and awkward CSVs through POST /upload: each is answered with the right status and the
right (row, column) pairs, every error is JSON, nothing is ever a 500, and a rejected file stores
nothing.

The corpus is ``tests/uploads/bad_inputs/``: one small file per case, described in ``cases.json`` (file ->
status, error, expected ``details`` as [row, column] pairs (a prefix when ``truncated``), or the
products of an accepted file). Cases too big to commit are generated below.

Image URLs point at http://127.0.0.1:9 (discard port): if a worker of the same test session picks
up an accepted upload, its downloads fail at once instead of reaching out.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

CORPUS = Path(__file__).parent / "bad_inputs"
CASES: dict[str, dict] = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))
HEADER = b"Serial Number,Product Name,Input Image URLs\n"
URL = "http://127.0.0.1:9/a.jpg"
TABLES = ("requests", "products", "images")


def table_counts(app) -> dict[str, int]:
    from pixshift.db.extensions import db

    with app.app_context():
        return {t: db.session.execute(text(f"select count(*) from {t}")).scalar_one() for t in TABLES}


def upload(client, data: bytes, filename: str = "products.csv"):
    # Encoded here, in memory: from a dict of files, werkzeug's test client spools a body past 500 kB
    # to a temporary file it never closes (a ResourceWarning).
    boundary, body = encode_multipart({"file": FileStorage(io.BytesIO(data), filename=filename)})
    return client.post("/upload", data=body, content_type=f"multipart/form-data; boundary={boundary}")


def stored_products(app, request_id: str) -> list[list]:
    """[serial, name, [urls]] of a stored request, in CSV order."""
    from pixshift.db.extensions import db
    from pixshift.db.models import Image, Product

    with app.app_context():
        products = db.session.scalars(
            db.select(Product).where(Product.request_id == request_id).order_by(Product.position)
        ).all()
        result = []
        for p in products:
            urls = db.session.scalars(
                db.select(Image.input_url).where(Image.product_id == p.id).order_by(Image.position)
            ).all()
            result.append([p.serial_number, p.name, list(urls)])
        return result


def assert_json_error(response, status: int, error: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.is_json, response.headers.get("Content-Type")
    body = response.get_json()
    assert body["error"] == error
    assert isinstance(body["message"], str) and body["message"]
    return body


def assert_details(body: dict, expected: list, truncated: bool = False) -> None:
    found = [[d["row"], d["column"]] for d in body["details"]]
    assert all(isinstance(d["message"], str) and d["message"] for d in body["details"])
    assert body["truncated"] is truncated
    if truncated:
        assert found[: len(expected)] == expected
    else:
        assert found == expected


def test_the_manifest_and_the_folder_agree():
    files = {p.name for p in CORPUS.iterdir() if p.is_file() and not p.name.startswith(".")} - {"cases.json"}
    assert files == set(CASES)
    for name, case in CASES.items():
        assert case["description"], name
        assert (case["status"] == 202) == ("products" in case) == (case["error"] is None), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_file(app, client, name):
    case = CASES[name]
    data = (CORPUS / name).read_bytes()
    before = table_counts(app)
    response = upload(client, data, name)
    if case["status"] == 202:
        assert response.status_code == 202, response.get_data(as_text=True)[:2000]
        body = response.get_json()
        assert body["request_id"] and body["status_url"].endswith(body["request_id"])
        assert body["products"] == len(case["products"])
        assert body["images"] == sum(len(urls) for _, _, urls in case["products"])
        assert stored_products(app, body["request_id"]) == case["products"]  # verbatim, <script> included
        after = table_counts(app)
        assert after == {
            "requests": before["requests"] + 1,
            "products": before["products"] + body["products"],
            "images": before["images"] + body["images"],
        }
    else:
        body = assert_json_error(response, case["status"], case["error"])
        if "details" in case:
            assert_details(body, case["details"], case.get("truncated", False))
        assert table_counts(app) == before, "a rejected file stored something"


# Generated cases: too big to commit.


def test_a_100_mb_upload_is_refused_without_being_read(app, client):
    body = LazyMultipart(100 * 1024 * 1024)
    before = table_counts(app)
    started = time.perf_counter()
    response = client.post("/upload", input_stream=body, content_type=body.content_type)
    assert_json_error(response, 413, "too_large")
    assert time.perf_counter() - started < 5
    assert body.consumed == 0  # refused on its Content-Length alone
    assert table_counts(app) == before


def test_a_100_mb_chunked_upload_is_cut_off_at_the_limit(app, client):
    """No Content-Length (chunked): reading stops at PIXSHIFT_MAX_CSV_BYTES, not at 100 MB."""
    body = LazyMultipart(100 * 1024 * 1024)
    started = time.perf_counter()
    response = client.post(
        "/upload",
        input_stream=body,
        content_type=body.content_type,
        environ_overrides={"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True},
    )
    assert_json_error(response, 413, "too_large")
    assert time.perf_counter() - started < 10
    assert body.consumed <= app.config["MAX_CONTENT_LENGTH"] + 64 * 1024


def test_a_million_empty_rows_is_no_product_rows_and_quick(app, client):
    before = table_counts(app)
    started = time.perf_counter()
    response = upload(client, HEADER + b"\n" * 1_000_000)
    elapsed = time.perf_counter() - started
    body = assert_json_error(response, 400, "invalid_csv")
    assert_details(body, [[2, None]])
    assert "no product rows" in body["details"][0]["message"]
    assert elapsed < 5
    assert table_counts(app) == before


def test_100001_valid_rows_are_too_many_and_row_100002_is_named(app, client):
    assert app.config["MAX_ROWS"] == 100_000
    data = HEADER + b"".join(b"%d,P%d,%s\n" % (i, i, URL.encode()) for i in range(1, 100_002))
    before = table_counts(app)
    body = assert_json_error(upload(client, data), 400, "invalid_csv")
    assert_details(body, [[100_002, None]])
    assert "too many rows" in body["details"][0]["message"]
    assert table_counts(app) == before


def test_an_empty_file_part_and_a_missing_one(app, client):
    before = table_counts(app)
    assert_details(assert_json_error(upload(client, b""), 400, "invalid_csv"), [[1, None]])
    assert_json_error(client.post("/upload", data={"other": "x"}), 400, "missing_file")
    assert table_counts(app) == before


class LazyMultipart(io.RawIOBase):
    """A multipart/form-data body of ``size`` bytes with one file field, made up as it is read."""

    def __init__(self, size: int, boundary: str = "pixshift-test-boundary") -> None:
        self.head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode() + HEADER
        self.tail = f"\r\n--{boundary}--\r\n".encode()
        self.size, self.pos, self.consumed = size, 0, 0
        self.content_type = f"multipart/form-data; boundary={boundary}"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.pos)
        fill_end = self.size - len(self.tail)
        out = bytearray()
        while len(out) < n:
            want = n - len(out)
            if self.pos < len(self.head):
                chunk = self.head[self.pos : self.pos + want]
            elif self.pos < fill_end:
                chunk = b"\n" * min(want, fill_end - self.pos)
            else:
                start = self.pos - fill_end
                chunk = self.tail[start : start + want]
            out += chunk
            self.pos += len(chunk)
        buffer[:n] = out
        self.consumed += n
        return n

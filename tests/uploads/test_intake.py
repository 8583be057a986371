"""Storing an upload: two streaming passes (validate, then insert in batches in one transaction), on
SQLite and on PostgreSQL (its own insert path: one statement a batch from arrays, pipelined)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
import threading

import pytest
from csv_files import post_csv
from sqlalchemy import func, select
from threads import waiting_in

from harness.livestack import ROOT, wait_until
from pixshift.db.extensions import db
from pixshift.db.models import Image, Product, Request
from pixshift.uploads import intake
from pixshift.uploads.csv_input import CsvRejected, ProductRow, read_products, validate

HEADER = "Serial Number,Product Name,Input Image URLs\r\n"
ROWS = 2 * intake._BATCH + 345  # three batches, the last one short


def csv_file(rows: int, bad_last_row: bool = False) -> bytes:
    """Products with 1 to 3 URLs, a blank row now and then (a spreadsheet numbers it all the same)."""
    lines = [HEADER]
    for serial in range(1, rows + 1):
        if serial % 97 == 0:
            lines.append(",,\r\n")
        urls = ", ".join(f"http://127.0.0.1:9/{serial}/{n}.jpg" for n in range(serial % 3 + 1))
        lines.append(f'{serial * 7},"Product {serial}, ""quoted""","{urls}"\r\n')
    if bad_last_row:
        lines.append("7,The serial of the first row,not-a-url\r\n")
    return "".join(lines).encode()


def spooled(data: bytes):
    """What werkzeug hands over for an uploaded file: a spooled temporary file, on disk past 500 kB.
    Use it in a ``with`` block, as werkzeug closes its own at the end of the request."""
    stream = tempfile.SpooledTemporaryFile(max_size=500 * 1024, mode="w+b")
    stream.write(data)
    stream.seek(0)
    return stream


def stored(request_id: str) -> tuple[list, list]:
    products = db.session.execute(
        select(Product.id, Product.position, Product.row, Product.serial_number, Product.name)
        .where(Product.request_id == request_id)
        .order_by(Product.id)
    ).all()
    images = db.session.execute(
        select(
            Image.id, Image.product_id, Image.position, Image.input_url, Image.state, Image.attempts, Image.request_id
        )
        .where(Image.request_id == request_id)
        .order_by(Image.id)
    ).all()
    return products, images


def counts() -> tuple[int, int, int]:
    return tuple(db.session.scalar(select(func.count()).select_from(t)) for t in (Request, Product, Image))


def test_rows_are_stored_in_file_order_with_ids_in_that_order(any_db_app):
    data = csv_file(ROWS)
    expected = list(read_products(io.BytesIO(data)))
    with spooled(data) as stream, any_db_app.app_context():
        totals = validate(stream)
        assert (totals.products, totals.images) == (ROWS, sum(len(r.urls) for r in expected))
        request_id = intake.create_request(read_products(stream), filename="p.csv", webhook_url=None)
        products, images = stored(request_id)
        request = db.session.get(Request, request_id)
        assert (request.product_count, len(images)) == (totals.products, totals.images)

    # Products: ids ascend with the position, which counts from 0 in file order.
    assert [(p.position, p.row, p.serial_number, p.name) for p in products] == [
        (i, r.row, r.serial_number, r.name) for i, r in enumerate(expected)
    ]
    assert products[0].name == 'Product 1, "quoted"' and products[96].row == 99  # a blank row before it
    # Images: ids ascend with (product, position); each points at its own product.
    product_ids = [p.id for p in products]
    assert [(i.product_id, i.position, i.input_url) for i in images] == [
        (product_ids[k], n, url) for k, r in enumerate(expected) for n, url in enumerate(r.urls)
    ]
    assert {(i.state, i.attempts, i.request_id) for i in images} == {("queued", 0, request_id)}


def test_postgresql_path_stores_exactly_what_the_sqlite_path_stores(pg_app, app):
    """Same rows, same positions, ids in the same order: only relative to the first id of each table."""
    data = csv_file(ROWS)

    def normalised(request_id: str) -> tuple[list, list]:
        products, images = stored(request_id)
        first_p, first_i = products[0].id, images[0].id
        return (
            [(p.id - first_p, *p[1:]) for p in products],
            [(i.id - first_i, i.product_id - first_p, *i[2:6]) for i in images],
        )

    with pg_app.app_context():
        postgresql = normalised(intake.create_request(read_products(io.BytesIO(data)), filename=None, webhook_url=None))
    with app.app_context():
        sqlite = normalised(intake.create_request(read_products(io.BytesIO(data)), filename=None, webhook_url=None))
    assert postgresql == sqlite


def test_a_rejected_upload_stores_nothing(any_db_app):
    """The bad row comes after three batches' worth of good ones: still nothing is stored."""
    client = any_db_app.test_client()
    with any_db_app.app_context():
        before = counts()
    response = client.post(
        "/upload",
        data={"file": (io.BytesIO(csv_file(ROWS, bad_last_row=True)), "p.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_csv" and body["message"].endswith("nothing was stored")
    last = ROWS + ROWS // 97 + 2
    assert [(d["row"], d["column"]) for d in body["details"]] == [(last, "Serial Number"), (last, "Input Image URLs")]
    with any_db_app.app_context():
        assert counts() == before


def test_a_failure_while_inserting_stores_nothing(any_db_app):
    """A database error in a later batch (a duplicate serial, which validation would have refused)
    or an error reading the rows: the whole request is rolled back, the first batches with it."""
    rows = [ProductRow(n + 2, n, f"P{n}", (f"http://127.0.0.1:9/{n}.jpg",)) for n in range(ROWS)]

    def failing():
        yield from rows[: intake._BATCH + 10]
        raise OSError("the upload's temporary file went away")

    with any_db_app.app_context():
        before = counts()
        with pytest.raises(Exception, match=r"unique|UNIQUE"):
            intake.create_request([*rows, rows[0]], filename=None, webhook_url=None)
        assert counts() == before
        with pytest.raises(OSError):
            intake.create_request(failing(), filename=None, webhook_url=None)
        assert counts() == before
        request_id = intake.create_request(rows[:3], filename=None, webhook_url=None)  # the session still works
        assert db.session.get(Request, request_id).product_count == 3


_MEASURE = """
import json, sys, tempfile, tracemalloc
from pixshift.uploads.csv_input import read_products, validate
with open(sys.argv[1], "rb") as source, tempfile.SpooledTemporaryFile(max_size=500 * 1024, mode="w+b") as stream:
    stream.write(source.read())
    stream.seek(0)
    tracemalloc.start()
    validate(stream)
    after_validate, peak_validate = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    rows = sum(1 for _ in read_products(stream))
    peak_read = tracemalloc.get_traced_memory()[1] - after_validate
print(json.dumps({"rows": rows, "validate": peak_validate, "read": peak_read}))
"""


def test_validation_holds_no_rows(tmp_path):
    """Checking a file keeps its serial numbers (to name duplicates) and nothing else of a row: under
    120 bytes a row, where the rows as objects took ~700. Reading it again holds one batch at most.
    Measured in a process of its own: tracemalloc counts every thread's allocations, and this test
    process runs consumer threads beside the test."""
    rows = 20_000
    (tmp_path / "products.csv").write_bytes(csv_file(rows))
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path / "products.csv")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    peaks = json.loads(proc.stdout)
    assert peaks["rows"] == rows
    assert peaks["validate"] < 120 * rows, peaks
    assert peaks["read"] < 256 * 1024, peaks


def test_validate_names_the_problems_of_a_streamed_file():
    with spooled(csv_file(10, bad_last_row=True)) as stream, pytest.raises(CsvRejected) as rejected:
        validate(stream)
    assert [(p.row, p.column) for p in rejected.value.problems] == [(12, "Serial Number"), (12, "Input Image URLs")]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.scaleout)])
def unreachable_queue(request, tmp_path):
    """A real ``python -m pixshift`` whose Huey queue (REDIS_URL) points at a closed port, on SQLite
    and, when configured, on a fresh PostgreSQL database; yields it with its database URL."""
    from services import scaleout_services

    from harness.livestack import Stack, closed_port

    with contextlib.ExitStack() as resources:
        closed = f"redis://127.0.0.1:{resources.enter_context(closed_port())}/0"
        if request.param == "sqlite":
            stack = resources.enter_context(Stack(tmp_path, {"REDIS_URL": closed}, separate_consumer=False, workers=0))
            yield stack, f"sqlite:///{tmp_path / 'instance' / 'pixshift.db'}"
            return
        env = resources.enter_context(scaleout_services())
        stack = resources.enter_context(
            Stack(tmp_path, {**env, "REDIS_URL": closed}, separate_consumer=False, workers=0)
        )
        yield stack, env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)


def test_an_unreachable_queue_refuses_the_upload_and_stores_nothing(unreachable_queue):
    """Stored but never enqueued, a request would wait for ever: the upload is refused with a 503
    the client can retry, and the rows written before the enqueue are removed again."""
    from sqlalchemy import create_engine

    stack, database_url = unreachable_queue
    response = stack.upload(csv_file(3))
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "queue_unavailable" and body["message"].endswith("nothing was stored")
    assert response.headers["Retry-After"] == "10"
    assert stack.session.get(stack.url("/readyz")).json()["checks"]["queue"] == "error"

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            stored_rows = [
                connection.scalar(select(func.count()).select_from(table))
                for table in (Request.__table__, Product.__table__, Image.__table__)
            ]
    finally:
        engine.dispose()
    assert stored_rows == [0, 0, 0]


def test_uploads_are_checked_and_stored_two_at_a_time(app, monkeypatch):
    """Many uploads at once wait for the two slots (so status polls meanwhile share the GIL with two)."""
    busy, most, lock = [0], [0], threading.Lock()
    released = threading.Event()
    check = intake.validate

    def held_check(*args, **kwargs):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        try:
            assert released.wait(30), "the test never let the checks go on"
            return check(*args, **kwargs)
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(intake, "validate", held_check)
    answers = []
    uploads = [
        threading.Thread(target=lambda: answers.append(post_csv(app.test_client(), csv_file(3), "p.csv")))
        for _ in range(6)
    ]
    try:
        for t in uploads:
            t.start()
        # Two checks are held inside their slots; the other four uploads have arrived and wait for a
        # slot in PixShift's code (not in the held check, which is this file's).
        wait_until(
            lambda: busy[0] == 2 and sum(waiting_in(t, ROOT / "pixshift") for t in uploads) == 4,
            10,
            message="two uploads in the slots and four waiting for one",
        )
        assert busy[0] == 2 and answers == []
    finally:
        released.set()
        for t in uploads:
            t.join(30)
    assert [a.status_code for a in answers] == [202] * 6
    assert most[0] == 2

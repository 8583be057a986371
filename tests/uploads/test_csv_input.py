"""CSV validation: every problem named by row and column, and nothing stored for a rejected file."""

from __future__ import annotations

import pytest
from csv_files import parse_products
from sqlalchemy import func, select

from pixshift.uploads.csv_input import CsvRejected, Limits

HEADER = "Serial Number,Product Name,Input Image URLs\r\n"
URL = "https://img.example.com/a.jpg"


def problems(text: str | bytes, limits: Limits | None = None) -> list[dict]:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(CsvRejected) as exc:
        parse_products(data, limits)
    return [p.as_dict() for p in exc.value.problems]


def test_valid_file_with_bom_odd_header_case_and_quoted_url_list():
    text = (
        "\ufeff  serial number , PRODUCT NAME,Input Image URLs \n"
        f'1,Shoe,"{URL}, https://img.example.com/b.png"\n\n2,"Hat, red",{URL}\n'
    )
    rows = parse_products(text.encode())
    assert [(r.row, r.serial_number, r.name, r.urls) for r in rows] == [
        (2, 1, "Shoe", (URL, "https://img.example.com/b.png")),
        (4, 2, "Hat, red", (URL,)),
    ]


def test_columns_in_another_order():
    rows = parse_products(f"Input Image URLs,Serial Number,Product Name\n{URL},5,Lamp\n".encode())
    assert rows[0].serial_number == 5 and rows[0].urls == (URL,)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", [{"row": 1, "column": None}]),
        ("Serial Number,Product Name\n1,Shoe\n", [{"row": 1, "column": "Input Image URLs"}]),
        ("Serial Number,Product Name,Input Image URLs,Price\n", [{"row": 1, "column": "Price"}]),
        ("Serial Number,Serial Number,Product Name,Input Image URLs\n", [{"row": 1, "column": "Serial Number"}]),
        (HEADER, [{"row": 2, "column": None}]),
        (HEADER + f"1,Shoe,{URL},{URL}\n", [{"row": 2, "column": None}]),
        (HEADER + f"1,,{URL}\n", [{"row": 2, "column": "Product Name"}]),
        (HEADER + f"x1,Shoe,{URL}\n", [{"row": 2, "column": "Serial Number"}]),
        (HEADER + f"1.5,Shoe,{URL}\n", [{"row": 2, "column": "Serial Number"}]),
        (HEADER + f"-3,Shoe,{URL}\n", [{"row": 2, "column": "Serial Number"}]),
        (HEADER + f"1,Shoe,{URL}\n1,Boot,{URL}\n", [{"row": 3, "column": "Serial Number"}]),
        (HEADER + "1,Shoe,\n", [{"row": 2, "column": "Input Image URLs"}]),
        (HEADER + '1,Shoe,"ftp://x/a.jpg"\n', [{"row": 2, "column": "Input Image URLs"}]),
        (HEADER + '1,Shoe,"/relative/a.jpg"\n', [{"row": 2, "column": "Input Image URLs"}]),
        (HEADER + f'1,Shoe,"{URL},,{URL}"\n', [{"row": 2, "column": "Input Image URLs"}]),
        (HEADER + '1,Shoe,"https://user:pw@x.com/a.jpg"\n', [{"row": 2, "column": "Input Image URLs"}]),
        (HEADER + '1,Shoe,"https://x.com:99999/a.jpg"\n', [{"row": 2, "column": "Input Image URLs"}]),
    ],
)
def test_each_problem_names_row_and_column(text, expected):
    found = problems(text)
    assert [{"row": p["row"], "column": p["column"]} for p in found] == expected
    assert all(p["message"] for p in found)


def test_every_problem_is_listed_not_just_the_first():
    text = HEADER + f"1,,{URL}\nabc,Boot,{URL}\n3,Hat,nope\n4,Cap,{URL}\n"
    assert [(p["row"], p["column"]) for p in problems(text)] == [
        (2, "Product Name"),
        (3, "Serial Number"),
        (4, "Input Image URLs"),
    ]


def test_problem_list_is_capped():
    text = HEADER + "".join(f"x{i},Shoe,{URL}\n" for i in range(200))
    with pytest.raises(CsvRejected) as exc:
        parse_products(text.encode(), Limits(max_problems=10))
    assert len(exc.value.problems) == 10 and exc.value.truncated


def test_non_utf8_bytes_are_named_by_row():
    data = (HEADER + f"1,Shoe,{URL}\n2,Caf\xe9,{URL}\n").encode("latin-1")
    assert [(p["row"], p["column"]) for p in problems(data)] == [(3, None)]


def test_unterminated_quote_is_an_error():
    found = problems(HEADER + f'1,"Shoe,{URL}\n')
    assert found == [{"row": 2, "column": None, "message": "malformed CSV near line 2: unexpected end of data"}]


def test_row_and_image_limits():
    text = HEADER + "".join(f"{i},P{i},{URL}\n" for i in range(1, 6))
    assert problems(text, Limits(max_rows=3))[0]["row"] == 5
    assert problems(text, Limits(max_images=4))[0]["column"] == "Input Image URLs"
    many = HEADER + f'1,Shoe,"{", ".join([URL] * 5)}"\n'
    assert "limit" in problems(many, Limits(max_urls_per_row=4))[0]["message"]


# Through the HTTP API (in-process app, SQLite): the error shape, and nothing stored.


def _count_requests(app) -> int:
    from pixshift.db.extensions import db
    from pixshift.db.models import Image, Request

    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Request)) + db.session.scalar(
            select(func.count()).select_from(Image)
        )


def test_upload_rejects_invalid_csv_and_stores_nothing(app, client):
    before = _count_requests(app)
    text = HEADER + f"1,Shoe,{URL}\n1,Boot,not-a-url\n"
    response = client.post("/upload", data={"file": (__import__("io").BytesIO(text.encode()), "p.csv")})
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_csv"
    assert {(d["row"], d["column"]) for d in body["details"]} == {(3, "Serial Number"), (3, "Input Image URLs")}
    assert _count_requests(app) == before


def test_upload_without_file_or_with_bad_webhook(client):
    import io

    assert client.post("/upload", data={}).get_json()["error"] == "missing_file"
    response = client.post(
        "/upload",
        data={"file": (io.BytesIO(f"{HEADER}1,a,{URL}\n".encode()), "p.csv"), "webhook_url": "javascript:alert(1)"},
    )
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_webhook_url"


def test_oversized_upload_is_a_json_413(app, client):
    import io

    limit = app.config["MAX_CONTENT_LENGTH"]
    app.config["MAX_CONTENT_LENGTH"] = 1000
    try:
        response = client.post("/upload", data={"file": (io.BytesIO(b"x" * 5000), "p.csv")})
    finally:
        app.config["MAX_CONTENT_LENGTH"] = limit
    assert response.status_code == 413
    assert response.get_json()["error"] == "too_large"

"""Property-based tests of the CSV parser and of POST /upload (Hypothesis).

- Any bytes: ``parse_products`` returns rows or raises CsvRejected, never anything else, and every
  problem is well formed (row None or >= 1, a message, a known column or the offending header label).
- Valid files in any legal dress (column order, header case and spaces, BOM, quoting, LF/CRLF/CR,
  blank rows, names spanning lines) parse to exactly the products written, with spreadsheet row numbers.
- One broken cell in a valid file is reported as exactly that (row, column).
- Whatever is accepted round-trips through csv.writer, has unique serials and only valid URLs.
- Through the API: any file body is 202, 400 or 413, errors are JSON, and a 400 stores nothing.
- The shortcut for plain URLs answers exactly as the full URL checks do.
"""

from __future__ import annotations

import csv
import io
import json

from csv_files import parse_products
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from pixshift.net.urls import url_problem
from pixshift.uploads.csv_input import COLUMNS, MAX_NAME_LENGTH, MAX_SERIAL, CsvRejected, Limits, ProductRow

SN, PN, IU = COLUMNS
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- checking any outcome ---------------------------------------------------------------------------


def header_labels(data: bytes) -> set[str]:
    """What the parser may name as an unexpected header column of this file."""
    try:
        header = next(csv.reader(io.StringIO(data.decode("utf-8-sig", "surrogateescape"), newline="")), [])
    except csv.Error:
        return set()
    return {cell.strip() or f"column {i + 1} (empty)" for i, cell in enumerate(header)}


def outcome(data: bytes, limits: Limits | None = None) -> list[ProductRow] | CsvRejected:
    """Parse, and check the invariants that hold whatever the input was."""
    limits = limits or Limits()
    try:
        rows = parse_products(data, limits)
    except CsvRejected as rejected:
        check_rejection(rejected, data, limits)
        event("rejected")
        return rejected
    check_rows(rows, limits)
    event("accepted")
    return rows


def check_rejection(rejected: CsvRejected, data: bytes, limits: Limits) -> None:
    assert rejected.problems and len(rejected.problems) <= limits.max_problems
    assert isinstance(rejected.truncated, bool)
    labels = None
    for p in rejected.problems:
        assert p.row is None or (isinstance(p.row, int) and p.row >= 1), p
        assert isinstance(p.message, str) and p.message.strip(), p
        if p.column is not None and p.column not in COLUMNS:
            labels = header_labels(data) if labels is None else labels
            assert p.row == 1 and p.column in labels, (p, labels)
        # What the API sends must be valid UTF-8 JSON: no lone surrogates from undecodable bytes.
        json.dumps(p.as_dict(), ensure_ascii=False).encode("utf-8")


def check_rows(rows: list[ProductRow], limits: Limits) -> None:
    assert rows and len(rows) <= limits.max_rows
    assert len({r.serial_number for r in rows}) == len(rows), "serials are unique"
    assert [r.row for r in rows] == sorted({r.row for r in rows}) and rows[0].row >= 2
    for r in rows:
        assert 0 <= r.serial_number <= MAX_SERIAL
        assert r.name and r.name == r.name.strip() and len(r.name) <= MAX_NAME_LENGTH
        assert "\x00" not in r.name
        r.name.encode("utf-8")  # no lone surrogates
        assert 1 <= len(r.urls) <= limits.max_urls_per_row
        for url in r.urls:
            assert url_problem(url) is None, url
    # Round trip: written back with csv.writer, the file parses to the same products.
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    writer.writerows([r.serial_number, r.name, ", ".join(r.urls)] for r in rows)
    again = parse_products(out.getvalue().encode("utf-8"), limits)
    assert [(r.serial_number, r.name, r.urls) for r in again] == [(r.serial_number, r.name, r.urls) for r in rows]


# -- strategies -------------------------------------------------------------------------------------

any_char = st.characters(exclude_categories=("Cs",))  # every code point a str can carry into UTF-8
name_char = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
names = st.text(name_char, min_size=1, max_size=30).map(str.strip).filter(bool)
serials = st.integers(0, MAX_SERIAL)
hosts = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z]{2,5}){0,2}", fullmatch=True),
    st.sampled_from(["127.0.0.1", "[::1]", "img.example.com", "xn--bcher-kva.example"]),
)
url_tail = st.text(st.sampled_from("abzAZ09-._~/%!$&'()*+;=:@?#\""), max_size=16)
urls = st.builds(
    lambda scheme, host, port, tail, comma: f"{scheme}://{host}{f':{port}' if port else ''}/{tail}{comma}",
    st.sampled_from(["http", "https", "HTTP", "Https"]),
    hosts,
    st.none() | st.integers(1, 65535),
    url_tail,
    st.sampled_from(["", "%2C", "?a=1%2C2"]),
)
pads = st.sampled_from(["", "", "", " ", "  ", "\t", " \t "])


@st.composite
def products(draw, min_size=1, max_size=8):
    rows = draw(
        st.lists(
            st.tuples(serials, names, st.lists(urls, min_size=1, max_size=4)),
            min_size=min_size,
            max_size=max_size,
            unique_by=lambda r: r[0],
        )
    )
    return [[s, n, u] for s, n, u in rows]


@st.composite
def render(draw, rows: list[list], header: list[str] | None = None):
    """A CSV file of ``rows`` (cells as [serial, name, urls] or raw strings) in random legal dress.
    Returns (text, record numbers of the rows as a spreadsheet numbers them)."""
    order = draw(st.permutations(range(3))) if header is None else list(range(len(header)))
    if header is None:
        header = [
            draw(pads) + draw(st.sampled_from([str, str.lower, str.upper, str.swapcase]))(COLUMNS[i]) + draw(pads)
            for i in order
        ]
    ending = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))

    def newline() -> str:
        return draw(st.sampled_from(["\n", "\r\n"])) if ending == "mixed" else ending

    def cell(value) -> str:
        if isinstance(value, int):
            value = draw(st.sampled_from(["", "0", "00"])) + str(value)
        elif isinstance(value, list):
            value = draw(st.sampled_from([",", ", ", " ,", " , "])).join(value)
        value = draw(pads) + value + draw(pads) if value.strip() else value
        if draw(st.booleans()) or any(c in value for c in ',"\r\n'):
            return '"' + value.replace('"', '""') + '"'
        return value

    lines = [",".join(cell(h) for h in header)]
    numbers = []
    for row in rows:
        if draw(st.integers(0, 3)) == 0:  # blank rows are skipped, but a spreadsheet numbers them
            lines.extend(draw(st.lists(st.sampled_from(["", ",,", " , , ", '"",,']), min_size=1, max_size=2)))
        lines.append(",".join(cell(row[i]) for i in order))
        numbers.append(len(lines))
    ends = [newline() for _ in lines]
    if draw(st.booleans()):
        ends[-1] = ""  # no line break after the last row
    text = "".join(line + end for line, end in zip(lines, ends))
    if draw(st.integers(0, 4)) == 0:
        text = "\ufeff" + text
    return text, numbers


@st.composite
def valid_files(draw):
    rows = draw(products())
    text, numbers = draw(render(rows))
    return text, [ProductRow(n, s, name, tuple(u)) for n, (s, name, u) in zip(numbers, rows)]


BAD_SERIALS = ["", " ", "x", "-1", "+1", "1.5", "1e3", "0x10", "1_000", "１", "٣", "9" * 19, "9" * 5000]
BAD_NAMES = ["", "   ", "\t", "n" * (MAX_NAME_LENGTH + 1)]
BAD_URL_LISTS = [
    "",
    " ",
    "ftp://h.example/a.jpg",
    "/a.jpg",
    "h.example/a.jpg",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "http://u:p@h.example/a.jpg",
    "http://u@h.example/a.jpg",
    "http://h.example/a b.jpg",
    "http://h.example:99999/a.jpg",
    "http://[::1/a.jpg",
    "http:///a.jpg",
    "http://h.example/a.jpg,",
    "http://h.example/a.jpg,,http://h.example/b.jpg",
    ",".join(["http://h.example/a.jpg"] * 101),
    "http://h.example/" + "a" * 2100,
]


# -- the parser -------------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=600))
@example(b"\xff\xfe" + "Serial Number".encode("utf-16-le"))
@example(b"Serial Number,Product Name,Input Image URLs\n" + b"9" * 5000 + b",a,http://h/a.jpg\n")
@example(b"Serial Number,Product Name,Input Image URLs\n1,a\x00,http://h/a.jpg\n")
def test_any_bytes_are_rows_or_a_rejection(data):
    outcome(data)


@FAST
@given(st.data())
def test_csv_of_arbitrary_text_cells_is_rows_or_a_rejection(data):
    extra = data.draw(st.lists(st.text(any_char, max_size=12), max_size=1)) if data.draw(st.integers(0, 4)) == 0 else []
    header = data.draw(st.permutations(list(COLUMNS) + extra))
    if data.draw(st.integers(0, 5)) == 0:
        del header[data.draw(st.integers(0, len(header) - 1))]  # a column missing
    cells = st.one_of(
        st.text(any_char, max_size=20),
        st.text(st.sampled_from(',"\r\n \tx1:/'), max_size=8),
        serials.map(str),
        names,
        urls,
        st.lists(urls, min_size=2, max_size=3).map(", ".join),
    )
    product = {SN: serials.map(str), PN: names, IU: st.lists(urls, min_size=1, max_size=3).map(", ".join)}
    plausible = st.tuples(*(product.get(h, cells) for h in header)).map(list)  # right kind of text per column
    width = st.integers(len(header) - 1, len(header) + 1) if data.draw(st.integers(0, 4)) == 0 else st.just(len(header))
    arbitrary = width.flatmap(lambda n: st.lists(cells, min_size=n, max_size=n))
    rows = data.draw(st.lists(st.one_of(arbitrary, plausible) if data.draw(st.booleans()) else plausible, max_size=6))
    header = [data.draw(st.sampled_from([str, str.lower, str.upper]))(h) for h in header]

    def cell(value: str) -> str:  # random quoting, always when needed
        if data.draw(st.booleans()) or any(c in value for c in ',"\r\n'):
            return '"' + value.replace('"', '""') + '"'
        return value

    ends = st.sampled_from(["\n", "\r\n", "\r", ""])  # "" on the last line only
    lines = [",".join(cell(c) for c in line) for line in [header, *rows]]
    text = "".join(
        line + data.draw(ends if i == len(lines) - 1 else st.sampled_from(["\n", "\r\n", "\r"]))
        for i, line in enumerate(lines)
    )
    outcome((data.draw(st.sampled_from(["", "\ufeff"])) + text).encode("utf-8"))


@FAST
@given(valid_files())
def test_a_valid_file_in_any_legal_dress_parses_to_exactly_its_products(case):
    text, expected = case
    rows = outcome(text.encode("utf-8"))
    assert rows == expected


@FAST
@given(st.data())
def test_one_broken_cell_is_named_by_its_row_and_column(data):
    rows = data.draw(products(min_size=1, max_size=6))
    k = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.sampled_from(COLUMNS))
    if column == SN:
        duplicate = k > 0 and data.draw(st.booleans())
        rows[k][0] = rows[data.draw(st.integers(0, k - 1))][0] if duplicate else data.draw(st.sampled_from(BAD_SERIALS))
    elif column == PN:
        rows[k][1] = data.draw(st.sampled_from(BAD_NAMES))
    else:
        rows[k][2] = [data.draw(st.sampled_from(BAD_URL_LISTS))]
    assume(any(str(c).strip() for c in rows[k][:2]) or rows[k][2] != [""])  # still not an empty row
    text, numbers = data.draw(render(rows))
    rejected = outcome(text.encode("utf-8"))
    assert isinstance(rejected, CsvRejected)
    assert [(p.row, p.column) for p in rejected.problems] == [(numbers[k], column)]


@FAST
@given(st.data())
def test_bytes_that_are_not_utf8_or_nul_name_their_row(data):
    """Undecodable bytes or a NUL in one name: that row is named, as a spreadsheet numbers it (quoted
    names spanning lines and CR-only line endings included), and every other row still parses."""
    rows = data.draw(products(min_size=1, max_size=6))
    k = data.draw(st.integers(0, len(rows) - 1))
    marker = "\ue000"
    name = rows[k][1]
    at = data.draw(st.integers(0, len(name)))
    rows[k][1] = name[:at] + marker + name[at:]
    text, numbers = data.draw(render(rows))
    bad = data.draw(st.sampled_from([b"\xe9", b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
    encoded = text.encode("utf-8").replace(marker.encode("utf-8"), bad)
    rejected = outcome(encoded)
    assert isinstance(rejected, CsvRejected)
    assert [(p.row, p.column) for p in rejected.problems] == [(numbers[k], None)]


@FAST
@given(products(min_size=2, max_size=10), st.integers(1, 9), st.data())
def test_the_row_limit_names_the_first_row_past_it_even_after_a_bad_row(rows, max_rows, data):
    broken = data.draw(st.none() | st.integers(0, min(max_rows, len(rows)) - 1))
    if broken is not None:
        rows[broken][0] = "not a number"
    text, numbers = data.draw(render(rows))
    result = outcome(text.encode("utf-8"), Limits(max_rows=max_rows))
    expected = [(numbers[broken], SN)] if broken is not None else []
    if len(rows) > max_rows:
        expected.append((numbers[max_rows], None))
    if expected:
        assert [(p.row, p.column) for p in result.problems] == expected
    else:
        assert isinstance(result, list) and len(result) == len(rows)


# -- the API ----------------------------------------------------------------------------------------


def table_counts(app) -> tuple[int, int, int]:
    from pixshift.db.extensions import db

    with app.app_context():
        return tuple(
            db.session.execute(text(f"select count(*) from {t}")).scalar_one()
            for t in ("requests", "products", "images")
        )


@st.composite
def upload_bodies(draw):
    kind = draw(st.sampled_from(["bytes", "valid", "broken"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    rows = draw(products(max_size=4))
    if kind == "broken":  # the last row, so that the rows before it would have been storable
        column = draw(st.integers(0, 2))
        rows[-1][column] = draw(st.sampled_from([["x", "-1", ""], ["", " "], ["ftp://h/a.jpg", "", "/a.jpg"]][column]))
    return draw(render(rows))[0].encode("utf-8")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=upload_bodies())
def test_upload_of_any_body_is_202_400_or_413_and_a_400_stores_nothing(app, body):
    client = app.test_client()
    before = table_counts(app)
    response = client.post("/upload", data={"file": (io.BytesIO(body), "p.csv")}, content_type="multipart/form-data")
    assert response.status_code in (202, 400, 413), response.get_data(as_text=True)[:500]
    event(f"HTTP {response.status_code}")
    assert response.is_json
    payload = response.get_json()
    if response.status_code == 202:
        assert payload["request_id"] and payload["products"] >= 1
        stored = table_counts(app)
        assert stored == (before[0] + 1, before[1] + payload["products"], before[2] + payload["images"])
        return
    assert payload["error"] and payload["message"]
    if response.status_code == 400:
        assert payload["error"] == "invalid_csv"
        assert all(d["row"] is None or d["row"] >= 1 for d in payload["details"])
        assert table_counts(app) == before


# -- the shortcut for plain URLs --------------------------------------------------------------------

url_like = st.builds(
    lambda scheme, host, port, tail: f"{scheme}://{host}{port}{tail}",
    st.sampled_from(["http", "https", "HTTP", "hTtPs", "ftp", "http:", "https ", "htt"]),
    st.text(st.sampled_from("az09.-_@[]:%K\u212a\u017f\u00e9 "), max_size=12),
    st.sampled_from(["", ":", ":0", ":80", ":9999", ":65535", ":65536", ":99999", ":+1", ":\u0663", ": 1"]),
    st.one_of(st.just(""), st.tuples(st.sampled_from("/?#@"), st.text(any_char, max_size=12)).map("".join)),
)


@FAST
@given(st.one_of(urls, url_like, st.text(any_char, max_size=30)))
@example("http://h.example/" + "a" * 2100)
@example("http://h.example/a\u00a0b")
@example("http://h.example:65536/a")
def test_the_plain_url_shortcut_agrees_with_the_full_checks(url):
    """url_problem skips its checks for plain URLs; it must answer exactly as they do."""
    from pixshift.net.urls import _url_checks

    assert url_problem(url) == _url_checks(url)

"""Parse and validate an uploaded product CSV, all or nothing.

Rules (documented in README): the header must name exactly the three columns
``Serial Number``, ``Product Name``, ``Input Image URLs`` in any order (case, surrounding
whitespace and a UTF-8 BOM are tolerated; any other column is an error, since PixShift would
otherwise silently drop data). ``Input Image URLs`` is one cell holding a comma-separated list of
absolute http(s) URLs; a comma inside a URL must be written ``%2C``. Rows that are entirely empty
are skipped. Row numbers are as a spreadsheet shows them: the header is row 1, and a quoted cell
spanning lines is still one row. The file must be UTF-8 without NUL bytes; each row that is not is
named, so every problem is listed and none by a byte offset.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

COLUMNS = ("Serial Number", "Product Name", "Input Image URLs")
_KEYS = {c.casefold(): c for c in COLUMNS}
MAX_NAME_LENGTH = 500
MAX_URL_LENGTH = 2048
MAX_SERIAL = 10**18 - 1  # fits a 64-bit column
# Bytes that are not UTF-8 are decoded to lone surrogates (surrogateescape); NUL is refused too:
# PostgreSQL cannot store it in text, and it usually means a UTF-16 file or binary data.
_NOT_TEXT = re.compile("[\x00\udc80-\udcff]")


@dataclass(frozen=True)
class Problem:
    row: int | None
    column: str | None
    message: str

    def as_dict(self) -> dict:
        return {"row": self.row, "column": self.column, "message": self.message}


@dataclass(frozen=True)
class ProductRow:
    row: int
    serial_number: int
    name: str
    urls: tuple[str, ...]


@dataclass
class Limits:
    max_rows: int = 100_000
    max_images: int = 200_000
    max_urls_per_row: int = 100
    max_problems: int = 50


class CsvRejected(Exception):
    """The file is not accepted; ``problems`` lists every problem found, up to a cap."""

    def __init__(self, problems: list[Problem], truncated: bool = False) -> None:
        super().__init__(f"{len(problems)} problem(s) in the CSV")
        self.problems = problems
        self.truncated = truncated


@dataclass
class _Collector:
    limit: int
    problems: list[Problem] = field(default_factory=list)
    truncated: bool = False

    def add(self, row: int | None, column: str | None, message: str) -> None:
        if len(self.problems) < self.limit:
            self.problems.append(Problem(row, column, message))
        else:
            self.truncated = True

    @property
    def full(self) -> bool:
        return self.truncated


def parse_products(data: bytes, limits: Limits | None = None) -> list[ProductRow]:
    """Return the products of a valid file, or raise CsvRejected naming each bad row and column."""
    limits = limits or Limits()
    problems = _Collector(limits.max_problems)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CsvRejected([Problem(1, None, "the file is UTF-16 text, not UTF-8; save it as CSV UTF-8")])
    text, clean = _decode(data)
    if not text.strip():
        raise CsvRejected([Problem(1, None, "the file is empty; expected a header row: " + ", ".join(COLUMNS))])

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[ProductRow] = []
    seen_serials: dict[int, int] = {}
    image_count = 0
    # Rows are counted as records (a quoted cell may span lines, and a lone CR ends a line too), so
    # they match what a spreadsheet shows.
    row_number, product_rows = 0, 0
    try:
        header = next(reader)
        row_number = 1
        if not clean and (message := _not_text(header, None)):
            problems.add(1, None, message)
            raise CsvRejected(problems.problems)
        order = _read_header(header, problems)
        if order is None:
            raise CsvRejected(problems.problems, problems.truncated)
        names = {index: name for name, index in order.items()}
        for row_number, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            product_rows += 1  # valid or not: a bad row before the limit must not hide the limit
            if product_rows > limits.max_rows:
                problems.add(row_number, None, f"too many rows: the limit is {limits.max_rows} products per file")
                break
            if not clean and (message := _not_text(cells, names)):
                problems.add(row_number, None, message)
            else:
                product = _read_row(row_number, cells, order, problems, limits, seen_serials)
                if product is not None:
                    rows.append(product)
                    image_count += len(product.urls)
            if problems.full:
                break
    except csv.Error as exc:
        # The record that failed is the one after the last one read, wherever the reader gave up.
        problems.add(row_number + 1, None, f"malformed CSV near line {_first_line(text, row_number + 1)}: {exc}")
    except StopIteration:
        pass

    if not problems.problems and not rows:
        problems.add(2, None, "the file has a header but no product rows")
    if image_count > limits.max_images:
        problems.add(None, COLUMNS[2], f"too many images: {image_count} in the file, the limit is {limits.max_images}")
    if problems.problems:
        raise CsvRejected(problems.problems, problems.truncated)
    return rows


def _first_line(text: str, record: int) -> int:
    """The physical line ``record`` (numbered from 1) starts on; only called for an error, so not kept."""
    reader = csv.reader(io.StringIO(text, newline=""))
    for _ in range(record - 1):
        next(reader)
    return reader.line_num + 1


def _decode(data: bytes) -> tuple[str, bool]:
    """The text, and whether it is clean: all UTF-8 and no NUL. Bad bytes are reported per row."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("utf-8-sig", errors="surrogateescape"), False
    return text, "\x00" not in text


def _not_text(cells: list[str], names: dict[int, str] | None) -> str | None:
    for index, cell in enumerate(cells):
        if match := _NOT_TEXT.search(cell):
            where = (names or {}).get(index) or f"column {index + 1}"
            if match.group() == "\x00":
                return f"a NUL byte in {where}; CSV text cannot hold one (is the file UTF-16?); save it as CSV UTF-8"
            return (f"the file is not UTF-8 text (byte 0x{ord(match.group()) - 0xDC00:02x} in {where}); "
                    "save it as CSV UTF-8")
    return None


def _read_header(header: list[str], problems: _Collector) -> dict[str, int] | None:
    order: dict[str, int] = {}
    for index, raw in enumerate(header):
        name = _KEYS.get(raw.strip().casefold())
        if name is None:
            label = raw.strip() or f"column {index + 1} (empty)"
            hint = next((f" (is the file separated by {sep} instead of commas?)" for key, sep in
                         ((";", "semicolons"), ("\t", "tabs")) if key in label), "")
            problems.add(1, label, f"unexpected column {label[:80]!r}; the columns are: " + ", ".join(COLUMNS) + hint)
        elif name in order:
            problems.add(1, name, f"column {name!r} appears more than once")
        else:
            order[name] = index
    for name in COLUMNS:
        if name not in order:
            problems.add(1, name, f"missing column {name!r}")
    return None if problems.problems else order


def _read_row(row: int, cells: list[str], order: dict[str, int], problems: _Collector,
              limits: Limits, seen_serials: dict[int, int]) -> ProductRow | None:
    if len(cells) != len(order):
        problems.add(row, None, f"expected {len(order)} cells, found {len(cells)}"
                                " (is a list of URLs missing its quotes?)")
        return None
    before = len(problems.problems)
    serial = _read_serial(row, cells[order[COLUMNS[0]]], problems, seen_serials)
    name = cells[order[COLUMNS[1]]].strip()
    if not name:
        problems.add(row, COLUMNS[1], "the product name is empty")
    elif len(name) > MAX_NAME_LENGTH:
        problems.add(row, COLUMNS[1], f"the product name is longer than {MAX_NAME_LENGTH} characters")
    urls = _read_urls(row, cells[order[COLUMNS[2]]], problems, limits)
    if len(problems.problems) != before or problems.full:
        return None
    return ProductRow(row, serial, name, urls)


def _read_serial(row: int, raw: str, problems: _Collector, seen: dict[int, int]) -> int:
    text = raw.strip()
    if not text:
        problems.add(row, COLUMNS[0], "the serial number is empty")
        return -1
    if not text.isascii() or not text.isdigit():
        problems.add(row, COLUMNS[0], f"the serial number {text[:40]!r} is not a whole number")
        return -1
    digits = text.lstrip("0") or "0"  # int() of thousands of digits raises ValueError
    if len(digits) > len(str(MAX_SERIAL)) or int(digits) > MAX_SERIAL:
        problems.add(row, COLUMNS[0], "the serial number is too large")
        return -1
    serial = int(digits)
    if serial in seen:
        problems.add(row, COLUMNS[0], f"serial number {serial} is also used on row {seen[serial]}")
        return -1
    seen[serial] = row
    return serial


def _read_urls(row: int, raw: str, problems: _Collector, limits: Limits) -> tuple[str, ...]:
    column = COLUMNS[2]
    if not raw.strip():
        problems.add(row, column, "no image URLs")
        return ()
    urls = [u.strip() for u in raw.split(",")]
    if len(urls) > limits.max_urls_per_row:
        problems.add(row, column, f"{len(urls)} URLs; the limit is {limits.max_urls_per_row} per product")
        return ()
    for n, url in enumerate(urls, start=1):
        message = url_problem(url)
        if message:
            problems.add(row, column, f"URL {n}: {message}")
    return tuple(urls)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an image URL, or None. Addresses are checked when fetching."""
    if not url:
        return "empty (two commas in a row, or a trailing comma?)"
    if len(url) > MAX_URL_LENGTH:
        return f"longer than {MAX_URL_LENGTH} characters"
    if any(c.isspace() or ord(c) < 32 for c in url):
        return f"{url[:80]!r} contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # raises on a bad port
    except ValueError:
        return f"{url[:80]!r} is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"{url[:80]!r} is not an absolute http(s) URL"
    if parts.username is not None or parts.password is not None:
        return f"{url[:80]!r} contains credentials; PixShift does not send them"
    return None

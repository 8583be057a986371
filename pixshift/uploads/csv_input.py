"""Parse and validate an uploaded product CSV, all or nothing.

Rules (documented in README): the header must name exactly the three columns
``Serial Number``, ``Product Name``, ``Input Image URLs`` in any order (case, surrounding
whitespace and a UTF-8 BOM are tolerated; any other column is an error, since PixShift would
otherwise silently drop data). ``Input Image URLs`` is one cell holding a comma-separated list of
absolute http(s) URLs; a comma inside a URL must be written ``%2C``. Rows that are entirely empty
are skipped. Row numbers are as a spreadsheet shows them: the header is row 1, and a quoted cell
spanning lines is still one row. The file must be UTF-8 without NUL bytes; each row that is not is
named, so every problem is listed and none by a byte offset.

An upload is read twice as a stream, so memory does not grow with the file: ``validate`` checks it
all and keeps only problems and counts, then ``read_products`` yields its rows to be stored.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TextIO

from pixshift.net.urls import url_problem

COLUMNS = ("Serial Number", "Product Name", "Input Image URLs")
_KEYS = {c.casefold(): c for c in COLUMNS}
MAX_NAME_LENGTH = 500
MAX_SERIAL = 10**18 - 1  # fits a 64-bit column
# Bytes that are not UTF-8 are decoded to lone surrogates (surrogateescape); NUL is refused too:
# PostgreSQL cannot store it in text, and it usually means a UTF-16 file or binary data.
_NOT_TEXT = re.compile("[\x00\udc80-\udcff]")


@dataclass(frozen=True)
class Problem:
    row: int | None
    column: str | None
    message: str

    def as_dict(self) -> dict[str, object]:
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


@dataclass(frozen=True)
class Totals:
    """What an accepted file holds."""

    products: int
    images: int


def validate(stream: IO[bytes], limits: Limits | None = None) -> Totals:
    """Check a whole file without keeping its rows (a 50,000-row upload held as objects was ~90 MiB):
    return its counts, or raise CsvRejected naming every problem. Reads ``stream`` from the start."""
    limits = limits or Limits()
    problems = _Collector(limits.max_problems)
    if message := _opening_problem(stream):
        raise CsvRejected([Problem(1, None, message)])
    with _text(stream) as text:
        products, images = _check_rows(text, limits, problems)
    if not problems.problems and not products:
        problems.add(2, None, "the file has a header but no product rows")
    if images > limits.max_images:
        problems.add(None, COLUMNS[2], f"too many images: {images} in the file, the limit is {limits.max_images}")
    if problems.problems:
        raise CsvRejected(problems.problems, problems.truncated)
    return Totals(products, images)


def read_products(stream: IO[bytes]) -> Iterator[ProductRow]:
    """The products of a file ``validate`` accepted, in order, one at a time: a second pass, so no
    list of every row is ever held. It trusts that validation and only converts the cells again."""
    with _text(stream) as text:
        reader = csv.reader(text, strict=True)
        header = [_KEYS[cell.strip().casefold()] for cell in next(reader)]
        serial, name, urls = (header.index(column) for column in COLUMNS)
        for row_number, cells in enumerate(reader, start=2):
            if any(c.strip() for c in cells):
                yield ProductRow(row_number, _serial(cells[serial]), cells[name].strip(), _split_urls(cells[urls]))


def _opening_problem(stream: IO[bytes]) -> str | None:
    """A file that is UTF-16 or only whitespace: one problem, not one per row."""
    stream.seek(0)
    if stream.read(2) in (b"\xff\xfe", b"\xfe\xff"):
        return "the file is UTF-16 text, not UTF-8; save it as CSV UTF-8"
    with _text(stream) as text:
        while chunk := text.read(1 << 16):
            if not chunk.isspace():
                return None
    return "the file is empty; expected a header row: " + ", ".join(COLUMNS)


@contextmanager
def _text(stream: IO[bytes]) -> Iterator[TextIO]:
    """The file as text from its start, decoded as it is read. Bytes that are not UTF-8 become lone
    surrogates (surrogateescape), reported per row. The upload's stream stays open for the next pass."""
    stream.seek(0)
    if stream.read(3) != codecs.BOM_UTF8:  # not "utf-8-sig": decoding piecemeal, it drops a file of b"\xef"
        stream.seek(0)
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    try:
        yield text
    finally:
        text.detach()


def _check_rows(text: TextIO, limits: Limits, problems: _Collector) -> tuple[int, int]:
    """Validate header and rows into ``problems``; return the counts of products and images."""
    reader = csv.reader(text, strict=True)
    seen_serials: dict[int, int] = {}
    image_count = 0
    # Rows are counted as records (a quoted cell may span lines, and a lone CR ends a line too), so
    # they match what a spreadsheet shows. ``line`` is the last physical line read, for csv.Error.
    row_number, product_rows, line = 0, 0, 0
    try:
        header = next(reader, None)
        if header is None:
            return 0, 0
        row_number, line = 1, reader.line_num
        if message := _not_text(header, None):
            problems.add(1, None, message)
            return 0, 0
        order = _read_header(header, problems)
        if order is None:
            return 0, 0
        names = {index: name for name, index in order.items()}
        for row_number, cells in enumerate(reader, start=2):
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            product_rows += 1  # valid or not: a bad row before the limit must not hide the limit
            if product_rows > limits.max_rows:
                problems.add(row_number, None, f"too many rows: the limit is {limits.max_rows} products per file")
                break
            if message := _not_text(cells, names):
                problems.add(row_number, None, message)
            else:
                image_count += _check_row(row_number, cells, order, problems, limits, seen_serials)
            if problems.full:
                break
    except csv.Error as exc:
        # The record that failed is the one after the last one read, wherever the reader gave up.
        problems.add(row_number + 1, None, f"malformed CSV near line {line + 1}: {exc}")
    return product_rows, image_count


def _not_text(cells: list[str], names: dict[int, str] | None) -> str | None:
    for index, cell in enumerate(cells):
        if match := _NOT_TEXT.search(cell):
            where = (names or {}).get(index) or f"column {index + 1}"
            if match.group() == "\x00":
                return f"a NUL byte in {where}; CSV text cannot hold one (is the file UTF-16?); save it as CSV UTF-8"
            return (
                f"the file is not UTF-8 text (byte 0x{ord(match.group()) - 0xDC00:02x} in {where}); "
                "save it as CSV UTF-8"
            )
    return None


def _read_header(header: list[str], problems: _Collector) -> dict[str, int] | None:
    order: dict[str, int] = {}
    for index, raw in enumerate(header):
        name = _KEYS.get(raw.strip().casefold())
        if name is None:
            label = raw.strip() or f"column {index + 1} (empty)"
            hint = next(
                (
                    f" (is the file separated by {sep} instead of commas?)"
                    for key, sep in ((";", "semicolons"), ("\t", "tabs"))
                    if key in label
                ),
                "",
            )
            problems.add(1, label, f"unexpected column {label[:80]!r}; the columns are: " + ", ".join(COLUMNS) + hint)
        elif name in order:
            problems.add(1, name, f"column {name!r} appears more than once")
        else:
            order[name] = index
    for name in COLUMNS:
        if name not in order:
            problems.add(1, name, f"missing column {name!r}")
    return None if problems.problems else order


def _check_row(
    row: int,
    cells: list[str],
    order: dict[str, int],
    problems: _Collector,
    limits: Limits,
    seen_serials: dict[int, int],
) -> int:
    """Add the row's problems; return its number of images (0 if it has a problem)."""
    if len(cells) != len(order):
        problems.add(
            row, None, f"expected {len(order)} cells, found {len(cells)} (is a list of URLs missing its quotes?)"
        )
        return 0
    before = len(problems.problems)
    _read_serial(row, cells[order[COLUMNS[0]]], problems, seen_serials)
    name = cells[order[COLUMNS[1]]].strip()
    if not name:
        problems.add(row, COLUMNS[1], "the product name is empty")
    elif len(name) > MAX_NAME_LENGTH:
        problems.add(row, COLUMNS[1], f"the product name is longer than {MAX_NAME_LENGTH} characters")
    urls = _read_urls(row, cells[order[COLUMNS[2]]], problems, limits)
    if len(problems.problems) != before or problems.full:
        return 0
    return len(urls)


def _read_serial(row: int, raw: str, problems: _Collector, seen: dict[int, int]) -> int:
    text = raw.strip()
    if not text:
        problems.add(row, COLUMNS[0], "the serial number is empty")
        return -1
    if not text.isascii() or not text.isdigit():
        problems.add(row, COLUMNS[0], f"the serial number {text[:40]!r} is not a whole number")
        return -1
    if len(text.lstrip("0")) > len(str(MAX_SERIAL)) or (serial := _serial(text)) > MAX_SERIAL:
        problems.add(row, COLUMNS[0], "the serial number is too large")
        return -1
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
    urls = _split_urls(raw)
    if len(urls) > limits.max_urls_per_row:
        problems.add(row, column, f"{len(urls)} URLs; the limit is {limits.max_urls_per_row} per product")
        return ()
    for n, url in enumerate(urls, start=1):
        message = url_problem(url)
        if message:
            problems.add(row, column, f"URL {n}: {message}")
    return urls


def _serial(text: str) -> int:
    """A serial number of ASCII digits as an int; int() refuses thousands of digits, leading zeros too."""
    return int(text.strip().lstrip("0") or "0")


def _split_urls(raw: str) -> tuple[str, ...]:
    return tuple(u.strip() for u in raw.split(","))

"""The CSV parser applied to a file held in memory, as /upload applies it to the spooled upload:
validate every row, then read the products (two passes)."""

from __future__ import annotations

import io

from pixshift.uploads.csv_input import Limits, ProductRow, read_products, validate


def parse_products(data: bytes, limits: Limits | None = None) -> list[ProductRow]:
    """Every product of ``data``, or CsvRejected."""
    stream = io.BytesIO(data)
    validate(stream, limits)
    return list(read_products(stream))

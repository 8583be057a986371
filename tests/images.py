"""Pictures for tests, made in memory: encoded bytes of any picture, and a JPEG that is costly to decode.

The photograph stand-in itself is ``harness.photos.photo`` (the bench uses it too)."""

from __future__ import annotations

import io

from PIL import Image


def save(im: Image.Image, fmt: str, **params) -> bytes:
    """``im`` encoded as ``fmt`` with Pillow's ``params``."""
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def scan_bomb(size: tuple[int, int] = (4000, 4000), repeats: int = 20_000) -> bytes:
    """A valid progressive JPEG whose last scan (a refinement of every AC coefficient of one
    component) is repeated: libjpeg warns and decodes each copy, a pass over every block. On a flat
    picture a copy is a few dozen bytes; 4000x4000 with 20,000 copies is a 1 MB file that takes
    minutes to decode (~5 ms a copy here)."""
    data = save(Image.new("RGB", size, (128, 128, 128)), "JPEG", quality=90, progressive=True)
    last_scan = data.rindex(b"\xff\xda")
    tables = data.rindex(b"\xff\xc4", 0, last_scan)  # the Huffman tables written just for that scan
    assert data.endswith(b"\xff\xd9") and tables > last_scan - 200
    return data[:-2] + data[tables:-2] * repeats + data[-2:]

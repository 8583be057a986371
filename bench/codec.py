"""The codec limit: decode + one encode of each corpus image with Pillow, in a tight loop on every core.

One process per core, each looping over the whole set (starting at a different image) until the
time is up; no threads, no GIL, no I/O, no size search, no thumbnails. Each image is decoded from
its file bytes, brought to the mode PixShift encodes (RGB, or RGBA when it has transparency) and
encoded once, in the format, at the quality and with the encoder settings PixShift's search ends on
for it. That is the most any pipeline built on Pillow could do with these images; every other rate
is compared with it.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class Job:
    path: str
    format: str  # "JPEG" or "WEBP": what PixShift outputs for this image
    quality: int  # the quality PixShift's search ends on
    lossless: bool = False  # PixShift made lossless WebP


@dataclass(frozen=True)
class CodecRate:
    images_per_s: float
    images: int
    seconds: float
    processes: int
    ms_per_image_per_core: float  # wall time: slowed by anything else running on the machine
    cpu_ms_per_image: float  # CPU time: what the work itself costs


def decode_encode(data: bytes, fmt: str, quality: int, lossless: bool = False) -> int:
    """One decode and one encode with the encoder settings PixShift's output is made with
    (pixshift.imaging.compress.encode and encoder_for: for JPEG, MozJPEG's table, with optimized Huffman
    tables below source quality 90)."""
    from pixshift.imaging.compress import encode, encoder_for

    im = Image.open(io.BytesIO(data))
    settings = encoder_for(im, "libjpeg-turbo")
    im.load()
    if fmt == "WEBP":
        im = im.convert("RGBA")
    else:
        im = im if im.mode in ("RGB", "L") else im.convert("RGB")
    return len(encode(im, quality, fmt=fmt, icc=None, jpeg_encoder=settings, lossless=lossless))


def _worker(jobs: list[Job], offset: int, seconds: float, start_at: float, results) -> None:
    loaded = [(Path(j.path).read_bytes(), j.format, j.quality, j.lossless) for j in jobs]
    loaded = loaded[offset % len(loaded) :] + loaded[: offset % len(loaded)]
    decode_encode(*loaded[0])  # warm up outside the clock
    while time.time() < start_at:
        time.sleep(0.001)
    begin, cpu = time.perf_counter(), time.process_time()
    done = 0
    while True:
        for data, fmt, quality, lossless in loaded:
            decode_encode(data, fmt, quality, lossless)
            done += 1
            if time.perf_counter() - begin >= seconds:
                results.put((done, time.perf_counter() - begin, time.process_time() - cpu))
                return


def codec_limit(jobs: list[Job], seconds: float, processes: int | None = None, start_delay: float = 1.5) -> CodecRate:
    """Images per second of decode + one encode on ``processes`` cores (default: all).

    ``start_delay``: every process is loaded and warm before the clock starts (0: each starts when
    it is ready, which is all one process needs)."""
    processes = processes or os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start_at = time.time() + start_delay
    workers = [
        ctx.Process(target=_worker, args=(jobs, i * len(jobs) // processes, seconds, start_at, results))
        for i in range(processes)
    ]
    for w in workers:
        w.start()
    got = [results.get(timeout=seconds + 60) for _ in workers]
    for w in workers:
        w.join()
    images = sum(n for n, _, _ in got)
    wall = max(t for _, t, _ in got)
    rate = sum(n / t for n, t, _ in got)
    return CodecRate(rate, images, wall, processes, 1000 * processes / rate, 1000 * sum(c for _, _, c in got) / images)


def search_one(path: str) -> dict:
    """PixShift's compress_to_ratio on one file, and whether quality + 1 would have overflowed (best)."""
    from pixshift.imaging.compress import compress_to_ratio, encode, encoder_for

    data = Path(path).read_bytes()
    r = compress_to_ratio(data)
    best = near = True  # quality + 1 overflows; quality + 2 does (the search may settle one below)
    if r.quality < 100 and r.scale == 1.0 and "lossless" not in r.notes:
        im = Image.open(io.BytesIO(data))
        settings = encoder_for(im, "libjpeg-turbo")
        im = im.convert("RGBA") if r.format == "WEBP" else im.convert("RGB")

        def size(quality: int) -> int:
            return len(encode(im, quality, fmt=r.format, icc=None, jpeg_encoder=settings))

        best = size(r.quality + 1) > len(data) // 2
        near = best or r.quality + 2 > 100 or size(r.quality + 2) > len(data) // 2
    return {
        "format": r.format,
        "quality": r.quality,
        "encodes": r.encodes,
        "probe_encodes": r.probe_encodes,
        "ratio": len(r.data) / len(data),
        "best": best,
        "near": near,
        "lossless": "lossless" in r.notes,
    }

"""Section 9: how the outputs look at the 50 % cap, per JPEG encoder, measured against the input.

Each image of the look set is compressed once per engine, in the same run: ``before`` (PixShift's
``pixshift/compress.py`` as it was at commit BASELINE, read from git: libjpeg's standard tables
without Huffman optimisation, lossy WebP for every transparent image), ``libjpeg-turbo`` (today's
default: MozJPEG's quantization table and optimized Huffman tables, lossless WebP where it fits)
and ``mozjpeg`` (PIXSHIFT_JPEG_ENCODER=mozjpeg, libvips' MozJPEG). For every output: its bytes over the
input's, the CPU seconds compress_to_ratio took (this process, one thread), SSIMULACRA2 (the
``ssimulacra2`` port; ~50 medium, ~70 high, ~90 very high) and SSIM (luma, Gaussian window
sigma 1.5, Wang et al.'s constants) against the decoded input, a downscaled output brought back to
the input's size first. Transparent images are scored over a dark and a light background (the
lower score counts, as libjxl's tool does) and their alpha is compared with the input's exactly.

The look set: photo-like JPEGs (bench/corpus.py's mosaics of the real fixture photos) at
1.0–2.4 MP saved at q75, q85, q92 and q95, four per band, and the corpus's PNGs (RGB photos become
JPEG, cut-outs with alpha WebP). SSIMULACRA2 in Python is slow (~1.5 s per MP), so the images are
spread over one process per core.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from bench.corpus import photo

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "3dd1386"  # main before the compression engine issue: the engine "before" is measured
ENGINES = ("before", "libjpeg-turbo", "mozjpeg")
_compressors: dict[str, Callable] = {}  # per pool process, set by _start
BANDS = (75, 85, 92, 95)
_SIZES = ((1200, 900), (1500, 1000), (1200, 1500), (1800, 1350))
_SMOKE_SIZES = ((160, 120),)  # SSIMULACRA2 costs ~30 ms here, ~100 ms at 320x240


def look_set(smoke: bool) -> list[tuple[str, str, bytes]]:
    """(name, band, file bytes): the JPEG bands, built here from the seeded mosaics."""
    out = []
    for q in BANDS:
        for i, size in enumerate(_SMOKE_SIZES if smoke else _SIZES):
            buf = io.BytesIO()
            photo(size, 500 + 10 * q + i).save(buf, "JPEG", quality=q)
            out.append((f"q{q}-{i}", f"q{q}", buf.getvalue()))
    return out


def look(pngs: list[Path], smoke: bool, log: Callable[[str], None], processes: int | None = None) -> dict:
    """Every engine on every image of the look set; per-image rows and per-band summaries, in
    ``processes`` processes (default: one per core)."""
    images = look_set(smoke) + [(f"png-{p.stem}", "png", p.read_bytes()) for p in pngs]
    jobs = [(name, band, data, engine) for name, band, data in images for engine in ENGINES]
    before = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{BASELINE}:pixshift/compress.py"], capture_output=True, text=True, check=True
    ).stdout
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        processes or os.cpu_count() or 1, mp_context=ctx, initializer=_start, initargs=(before,)
    ) as pool:
        rows = list(pool.map(_measure, jobs))
    log(f"look: {len(images)} images x {len(ENGINES)} engines scored in {time.perf_counter() - started:.0f} s")
    summary = {engine: _summarise([r for r in rows if r["engine"] == engine]) for engine in ENGINES}
    return {"rows": rows, "summary": summary, "images": len(images)}


def _summarise(rows: list[dict]) -> dict:
    def band(rs: list[dict]) -> dict:
        return {
            "images": len(rs),
            "s2_mean": statistics.fmean(r["s2"] for r in rs),
            "s2_min": min(r["s2"] for r in rs),
            "ssim_mean": statistics.fmean(r["ssim"] for r in rs),
            "ratio_max": max(r["ratio"] for r in rs),
            "cpu_s": sum(r["cpu_s"] for r in rs),
            "downscaled": sum(r["scale"] < 1 for r in rs),
            "qualities": [r["quality"] for r in rs],
        }

    photos = [r for r in rows if r["band"] != "png"]
    out = {"photos": band(photos), "all": band(rows)}
    for b in sorted({r["band"] for r in rows}):
        out[b] = band([r for r in rows if r["band"] == b])
    out["alpha_exact"] = all(r["alpha_exact"] for r in rows if r["alpha_exact"] is not None)
    return out


def _start(before_source: str) -> None:
    """Load the engine of BASELINE beside today's, then warm every engine up (imports, codec
    set-up) outside the CPU clock of the first image."""
    from pixshift.imaging.compress import compress_to_ratio

    module = types.ModuleType("pixshift_compress_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    # The package was laid out in layers since BASELINE: its imports name today's homes.
    source = before_source.replace("from pixshift import formats", "from pixshift.imaging import formats")
    exec(compile(source, f"{BASELINE}:pixshift/compress.py", "exec"), module.__dict__)
    _compressors["before"] = module.compress_to_ratio
    for engine in ENGINES[1:]:
        _compressors[engine] = lambda data, engine=engine: compress_to_ratio(data, jpeg_encoder=engine)
    buf = io.BytesIO()
    photo((64, 64), 1).save(buf, "JPEG", quality=90)
    for compress in _compressors.values():
        compress(buf.getvalue())
    _ssimulacra2(Image.open(buf).convert("RGB"), Image.open(buf).convert("RGB"))


def _measure(job: tuple[str, str, bytes, str]) -> dict:
    name, band, data, engine = job
    cpu = time.process_time()
    result = _compressors[engine](data)
    cpu = time.process_time() - cpu
    source = Image.open(io.BytesIO(data))
    source.load()
    output = Image.open(io.BytesIO(result.data))
    output.load()
    alpha_exact = None
    if source.mode in ("RGBA", "LA") or "transparency" in source.info:
        source, output = source.convert("RGBA"), output.convert("RGBA")
        alpha_exact = source.getchannel("A").tobytes() == output.getchannel("A").tobytes()
    if output.size != source.size:
        output = output.resize(source.size, Image.Resampling.LANCZOS)
    return {
        "name": name,
        "band": band,
        "engine": engine,
        "format": result.format,
        "quality": result.quality,
        "scale": result.scale,
        "ratio": len(result.data) / len(data),
        "cpu_s": cpu,
        "s2": _ssimulacra2(source, output),
        "ssim": _ssim(source, output),
        "alpha_exact": alpha_exact,
    }


def _over(image: Image.Image, level: int) -> Image.Image:
    if image.mode != "RGBA":
        return image.convert("RGB")
    ground = Image.new("RGBA", image.size, (level, level, level, 255))
    return Image.alpha_composite(ground, image).convert("RGB")


def _ssimulacra2(source: Image.Image, output: Image.Image) -> float:
    from ssimulacra2 import compute_ssimulacra2

    def png(image: Image.Image) -> io.BytesIO:
        buf = io.BytesIO()
        image.save(buf, "PNG", compress_level=1)
        buf.seek(0)
        return buf

    levels = (26, 230) if source.mode == "RGBA" else (0,)  # libjxl's tool: 0.1 and 0.9 of white
    return min(float(compute_ssimulacra2(png(_over(source, v)), png(_over(output, v)))) for v in levels)


def _ssim(source: Image.Image, output: Image.Image) -> float:
    import numpy as np
    from scipy.ndimage import gaussian_filter

    a = np.asarray(_over(source, 255).convert("L"), dtype=np.float64)
    b = np.asarray(_over(output, 255).convert("L"), dtype=np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = gaussian_filter(a, 1.5), gaussian_filter(b, 1.5)
    var_a = gaussian_filter(a * a, 1.5) - mu_a * mu_a
    var_b = gaussian_filter(b * b, 1.5) - mu_b * mu_b
    cov = gaussian_filter(a * b, 1.5) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim.mean())

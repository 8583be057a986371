"""Measure compress_to_ratio's quality search: encodes per image, qualities, optimality, time.

    PYTHONPATH=. .venv/bin/python bench/compress_search.py [IMAGE_DIR ...]
    PYTHONPATH=. .venv/bin/python bench/compress_search.py --threads
    PYTHONPATH=. .venv/bin/python bench/compress_search.py --bench-corpus

``--bench-corpus`` takes the JPEGs of the benchmark's corpus (bench/corpus.py) as they are and prints
every encode the search makes for each (quality -> bytes, against the budget): where the encodes
beyond two go.

Every image (synthetic photos, plus any PNG/JPEG found in IMAGE_DIRs) is saved as JPEG at
quality 75, 85, 90 and 95 and compressed to half. For each result, quality + 1 is encoded to check
that it really does not fit (the search claims the best quality, not one step below).
"""

from __future__ import annotations

import io
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.photos import photo
from pixshift.imaging.compress import compress_to_ratio, encode


def corpus(dirs: list[str]) -> dict[str, Image.Image]:
    images = {f"synthetic-{seed}": photo(seed=seed) for seed in (1, 2, 3, 4)}
    for d in dirs:
        for path in sorted(Path(d).iterdir()):
            if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
                im = Image.open(path)
                if im.width * im.height >= 100_000:
                    images[path.stem] = im.convert("L" if im.mode in ("L", "I;16") else "RGB")
    return images


def jpeg_bytes(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def main(dirs: list[str]) -> None:
    rows = []
    for name, im in corpus(dirs).items():
        for source_quality in (75, 85, 90, 95):
            data = jpeg_bytes(im, source_quality)
            start = time.perf_counter()
            r = compress_to_ratio(data)
            ms = (time.perf_counter() - start) * 1000
            budget = len(data) // 2
            best = r.quality == 95 or len(jpeg_bytes(_decoded(data, r), r.quality + 1)) > budget
            rows.append((name, source_quality, r, ms, best))
            print(
                f"{name:22s} q{source_quality}: -> q{r.quality:<3d} encodes {r.encodes} "
                f"scale {r.scale:.2f} {len(r.data) / len(data):.3f} of {len(data):>7d} B "
                f"{ms:6.1f} ms {'best' if best else 'NOT BEST'}"
            )
    for label, keep in (
        ("all found at full size", lambda row: row[2].scale == 1.0),
        ("q85-95 sources", lambda row: row[2].scale == 1.0 and row[1] >= 85),
        ("q90-95 sources", lambda row: row[2].scale == 1.0 and row[1] >= 90),
        ("downscaled", lambda row: row[2].scale < 1.0),
    ):
        sel = [row for row in rows if keep(row)]
        if sel:
            enc = [row[2].encodes for row in sel]
            print(
                f"{label:24s} n={len(sel):3d} encodes mean {statistics.mean(enc):.2f} max {max(enc)}"
                f"  ms mean {statistics.mean(row[3] for row in sel):.1f}"
                f"  best {sum(row[4] for row in sel)}/{len(sel)}"
            )


def _decoded(data: bytes, r) -> Image.Image:
    """The pixels the search encoded: the decoded source, resized like the output if it was."""
    im = Image.open(io.BytesIO(data))
    im.load()
    if r.scale < 1.0:
        im = im.resize((r.width, r.height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return im


def rate(work, threads: int, seconds: float = 3.0) -> float:
    """Calls per second of work() from `threads` threads running for about `seconds`."""
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            work()
            done[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - start)


def thread_scaling() -> None:
    """Pillow releases the GIL only when encoding to a real file descriptor: check that threads scale."""
    im = photo((2000, 1500))
    data = jpeg_bytes(im, 90)

    def bytesio_encode() -> None:
        im.save(io.BytesIO(), "JPEG", quality=80)

    for label, work in (
        ("encode q80 into BytesIO", bytesio_encode),
        ("encode q80 into memfd (encode)", lambda: encode(im, 80, fmt="JPEG", icc=None)),
        ("compress_to_ratio, 3 MP q90 JPEG", lambda: compress_to_ratio(data)),
    ):
        one, two = rate(work, 1), rate(work, 2)
        print(f"{label:34s} 1 thread {one:6.1f}/s  2 threads {two:6.1f}/s  x{two / one:.2f}")


def trace_bench_corpus() -> None:
    """Each encode of the search on the benchmark corpus, to see where the encodes beyond two go."""
    import tempfile

    import pixshift.imaging.compress as compress
    from bench.corpus import build

    corpus = build(Path(tempfile.mkdtemp(prefix="pixshift-search-")))
    real_encode = compress.encode
    counts, probes, bests = [], [], 0
    for item in corpus.of("jpeg"):
        data = corpus.path(item).read_bytes()
        budget = len(data) // 2
        steps: list[tuple[int, int]] = []

        def encode(image, quality, steps=steps, **kw):
            out = real_encode(image, quality, **kw)
            if image.width > 1:  # not the 1x1 header measurement
                steps.append((quality, len(out), image.height))
            return out

        compress.encode = encode
        try:
            r = compress_to_ratio(data)
        finally:
            compress.encode = real_encode
        steps = steps[1:-1]  # the input thumbnail is encoded first, the output's last
        counts.append(r.encodes)
        probes.append(r.probe_encodes)
        best = r.quality == 95 or len(jpeg_bytes(_decoded(data, r), r.quality + 1)) > budget
        bests += best
        # a probe encode (fewer rows) shows as p<quality>: its bytes scaled to the full height, headers
        # included (so ~1% high), over the budget
        trail = " ".join(f"{'q' if h == r.height else 'p'}{q}:{n * r.height / h / budget:.3f}" for q, n, h in steps)
        print(
            f"{item.name} {item.width}x{item.height} source q{item.source_quality} -> q{r.quality} "
            f"{'best' if best else 'NOT BEST'} in {r.encodes} + {r.probe_encodes} probes: {trail}  (bytes / budget)"
        )
    print(
        f"full-size encodes mean {statistics.mean(counts):.2f}, max {max(counts)}, "
        f"distribution {dict(sorted(Counter(counts).items()))}; probe encodes mean {statistics.mean(probes):.2f}; "
        f"best quality {bests}/{len(counts)}"
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--threads"]:
        thread_scaling()
    elif sys.argv[1:] == ["--bench-corpus"]:
        trace_bench_corpus()
    else:
        main(sys.argv[1:])

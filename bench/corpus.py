"""The benchmark corpus, generated deterministically at run time from the real photos in tests/fixtures.

Nothing large is shipped: every image is a mosaic of crops of the four real photographs in
tests/fixtures (astronaut, coffee, rocket, chelsea; public domain / CC0, see its README), each
enlarged 1.5-2.5x with Lanczos to product-photo sizes (1-4 MP), plus a light, slightly blurred
sensor grain (sigma ~1 level) from a seeded generator: the same bytes on every run (for a given
Pillow). Noise and flat colours compress nothing like a photo; these behave like photos, a little
smoother than camera originals (enlarged, like many studio product shots): 1.2-1.8 bits per pixel
at q90, and compressed to half their bytes, q90 sources land at q64-75 and q95 sources at q82-85
(PERFORMANCE-NOTES.md measured q56-68 and q76-83 on 24 real 3 MP photos). ``python -m bench.corpus``
prints each image's figures.

Sets:
- ``jpeg``: 24 JPEGs, 1.1-4.0 MP, saved at quality 85, 90 and 95 (a third each);
- ``png``: 8 PNGs, 1.0-2.0 MP: 4 RGB photos (PixShift makes JPEG of them) and 4 RGBA product
  cut-outs with a feathered transparent background (PixShift makes WebP with lossless alpha);
- ``small``: the three fixture photos themselves (0.2-0.3 MP), for the slow-hosts test, whose point
  is waiting, not decoding;
- ``tiny``: one 320x240 JPEG, for the request of thousands of images behind the status test.
"""

from __future__ import annotations

import io
import random
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SOURCES = ("photo1.jpg", "photo2.jpg", "photo3.jpg", "alpha.png")  # astronaut, coffee, rocket, chelsea
SMALL = ("photo1.jpg", "photo2.jpg", "photo3.jpg")
GRAIN_SIGMA = 1.1
# byte -> 128 + N(0, (2.2 * GRAIN_SIGMA)^2) quantile; the 0.7 px blur below takes sigma down to ~GRAIN_SIGMA
_GAUSSIAN = [
    min(255, max(0, round(128 + 2.2 * GRAIN_SIGMA * NormalDist().inv_cdf((v + 0.5) / 256)))) for v in range(256)
]

# (width, height, JPEG quality): 1.1-4.0 MP, landscape, portrait and square, q85/90/95 a third each.
_SIZES = [(1200, 900), (1500, 1000), (1600, 1200), (1500, 1500), (1200, 1800), (2000, 1500), (2400, 1600), (2000, 2000)]
JPEG_SPECS = [(w, h, (90, 95, 85)[i % 3]) for i, (w, h) in enumerate(_SIZES * 3)]
PNG_SPECS = [
    (1000, 1000, False),
    (1400, 1000, False),
    (1200, 1200, False),
    (1600, 1200, False),
    (1000, 1000, True),
    (1200, 1000, True),
    (1200, 1200, True),
    (1400, 1000, True),
]
# The smoke run: the same kinds of images, small enough to make in a blink.
SMOKE_JPEG_SPECS = [(480, 360, 90), (400, 400, 95), (360, 480, 85)]
SMOKE_PNG_SPECS = [(320, 240, False), (320, 240, True)]


@dataclass(frozen=True)
class Item:
    set: str  # "jpeg", "png", "small", "tiny"
    name: str  # path relative to the corpus root, e.g. "jpeg/07.jpg"
    width: int
    height: int
    nbytes: int
    source_quality: int | None  # JPEG quality it was saved at; None for PNG
    alpha: bool


@dataclass(frozen=True)
class Corpus:
    root: Path
    items: list[Item]

    def of(self, kind: str) -> list[Item]:
        return [i for i in self.items if i.set == kind]

    def path(self, item: Item) -> Path:
        return self.root / item.name


def _sources() -> list[Image.Image]:
    return [Image.open(FIXTURES / name).convert("RGB") for name in SOURCES]


def photo(size: tuple[int, int], seed: int, sources: list[Image.Image] | None = None) -> Image.Image:
    """A photo-like RGB image: a 1x1 to 3x2 mosaic of enlarged crops of real photos, plus grain."""
    rng = random.Random(seed)
    sources = sources or _sources()
    width, height = size
    cols, rows = rng.choice((1, 2, 2, 3)), rng.choice((1, 2, 2))
    xs = [round(i * width / cols) for i in range(cols + 1)]
    ys = [round(j * height / rows) for j in range(rows + 1)]
    canvas = Image.new("RGB", size)
    for i in range(cols):
        for j in range(rows):
            tw, th = xs[i + 1] - xs[i], ys[j + 1] - ys[j]
            src = rng.choice(sources)
            scale = max(tw / src.width, th / src.height, rng.uniform(1.5, 2.5))
            x, y = rng.uniform(0, src.width - tw / scale), rng.uniform(0, src.height - th / scale)
            tile = src.resize((tw, th), Image.Resampling.LANCZOS, box=(x, y, x + tw / scale, y + th / scale))
            if rng.random() < 0.5:
                tile = ImageOps.mirror(tile)
            canvas.paste(tile, (xs[i], ys[j]))
    # Gaussian noise around 128 from the seeded generator (uniform bytes through the normal
    # distribution's inverse CDF; Image.effect_noise would use C's unseeded rand()), blurred a
    # little so that it is grain rather than pixel noise.
    uniform = Image.frombytes("L", size, rng.randbytes(width * height))
    grain = uniform.point(_GAUSSIAN).filter(ImageFilter.GaussianBlur(0.7))
    return ImageChops.add(canvas, Image.merge("RGB", [grain] * 3), scale=1.0, offset=-128)


def cutout(size: tuple[int, int], seed: int) -> Image.Image:
    """A product cut-out: a photo inside a feathered rounded shape, transparent around it."""
    im = photo(size, seed)
    mask = Image.new("L", size, 0)
    w, h = size
    ImageDraw.Draw(mask).rounded_rectangle((w * 0.12, h * 0.1, w * 0.88, h * 0.9), radius=min(w, h) // 6, fill=255)
    im.putalpha(mask.filter(ImageFilter.GaussianBlur(min(w, h) / 80)))
    return im


def _make(job: tuple) -> tuple[str, bytes]:
    kind, index, spec = job
    seed = 1000 * (kind == "png") + index + 1
    if kind == "jpeg":
        w, h, q = spec
        buf = io.BytesIO()
        photo((w, h), seed).save(buf, "JPEG", quality=q)
        return f"jpeg/{index:02d}.jpg", buf.getvalue()
    w, h, alpha = spec
    im = cutout((w, h), seed) if alpha else photo((w, h), seed)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return f"png/{index:02d}.png", buf.getvalue()


def build(dest: Path, *, smoke: bool = False, processes: int = 2) -> Corpus:
    """Write the corpus under ``dest`` (made afresh) and describe it."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    for sub in ("jpeg", "png", "small", "tiny"):
        (dest / sub).mkdir(parents=True)
    jpeg_specs = SMOKE_JPEG_SPECS if smoke else JPEG_SPECS
    png_specs = SMOKE_PNG_SPECS if smoke else PNG_SPECS
    jobs = [("jpeg", i, s) for i, s in enumerate(jpeg_specs)] + [("png", i, s) for i, s in enumerate(png_specs)]
    if processes > 1 and not smoke:
        with ProcessPoolExecutor(processes) as pool:
            made = list(pool.map(_make, jobs))
    else:
        made = [_make(job) for job in jobs]
    for name, data in made:
        (dest / name).write_bytes(data)
    for name in SMALL:
        shutil.copyfile(FIXTURES / name, dest / "small" / name)
    buf = io.BytesIO()
    photo((320, 240), 7).save(buf, "JPEG", quality=90)
    (dest / "tiny" / "tiny.jpg").write_bytes(buf.getvalue())
    return describe(dest)


def describe(root: Path) -> Corpus:
    items = []
    for path in sorted(root.glob("*/*")):
        kind = path.parent.name
        with Image.open(path) as im:
            quality = _jpeg_quality(im) if im.format == "JPEG" else None
            items.append(
                Item(
                    kind,
                    f"{kind}/{path.name}",
                    im.width,
                    im.height,
                    path.stat().st_size,
                    quality,
                    im.mode in ("RGBA", "LA") or "transparency" in im.info,
                )
            )
    return Corpus(root, items)


def _jpeg_quality(im: Image.Image) -> int | None:
    from pixshift.imaging.compress import jpeg_quality  # exact for files Pillow wrote

    return jpeg_quality(im)


if __name__ == "__main__":  # python -m bench.corpus [DIR]: build it and show how it compresses
    import sys
    import tempfile
    import time

    from pixshift.imaging.compress import compress_to_ratio

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="pixshift-corpus-"))
    start = time.perf_counter()
    corpus = build(target)
    print(f"built {len(corpus.items)} files in {target} in {time.perf_counter() - start:.1f} s")
    for item in corpus.items:
        data = corpus.path(item).read_bytes()
        r = compress_to_ratio(data)
        print(
            f"{item.name:16s} {item.width}x{item.height} {item.width * item.height / 1e6:4.2f} MP "
            f"{item.nbytes / 1e3:7.0f} kB {8 * item.nbytes / (item.width * item.height):5.2f} bpp "
            f"q{item.source_quality or '--'} -> {r.format} q{r.quality} {len(r.data) / len(data):.3f} "
            f"in {r.encodes} encodes"
        )

"""A deterministic stand-in for a photograph, for tests and the bench's compression search."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw, ImageFilter


def photo(size: tuple[int, int] = (1600, 1000), seed: int = 1) -> Image.Image:
    """A deterministic stand-in for a photograph: noise or flat colour compress nothing like one.

    Smooth colour gradients, blurred shapes, luminance texture at several scales (roughly 1/f,
    like natural scenes) and fine grain; its JPEG bytes per pixel at q75-95 are in the range of
    real photos (0.9-2.2 bpp)."""
    rnd = random.Random(seed)
    w, h = size

    def noise(cells: tuple[int, int], mode: str) -> Image.Image:
        raw = rnd.randbytes(cells[0] * cells[1] * len(mode))
        return Image.frombytes(mode, cells, raw).resize(size, Image.Resampling.BICUBIC)

    ramp = Image.linear_gradient("L").resize(size)
    im = Image.merge(
        "RGB",
        [ramp.point(lambda v, a=a, b=b: a + (b - a) * v // 255) for a, b in ((60, 210), (90, 200), (160, 120))],
    )
    im = Image.blend(im, noise((6, 4), "RGB"), 0.4)
    draw = ImageDraw.Draw(im)
    for _ in range(30):
        x, y, r = rnd.randrange(w), rnd.randrange(h), rnd.randrange(30, 220)
        colour = tuple(rnd.randrange(40, 220) for _ in range(3))
        if rnd.random() < 0.6:
            draw.ellipse((x - r, y - r // 2, x + r, y + r), fill=colour)
        else:
            draw.polygon([(x + rnd.randrange(-r, r), y + rnd.randrange(-r, r)) for _ in range(4)], fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(2))
    texture = Image.new("L", size, 128)
    for cells, weight in (((40, 25), 0.5), ((160, 100), 0.35), ((640, 400), 0.25)):
        texture = Image.blend(texture, noise(cells, "L"), weight)
    grain = Image.frombytes("L", size, rnd.randbytes(w * h)).filter(ImageFilter.GaussianBlur(0.7))
    texture = Image.blend(texture, grain, 0.15)
    return Image.blend(im, Image.merge("RGB", [texture] * 3), 0.35)

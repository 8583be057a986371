"""Tests for pixshift.imaging.compress: the byte guarantee, best quality, formats, failures, thumbnails."""

from __future__ import annotations

import io
import random
import statistics
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from images import save, scan_bomb
from PIL import Image, ImageChops, ImageCms, ImageDraw, ImageFilter

from harness.photos import photo
from pixshift.failures import ImageFailure
from pixshift.imaging.compress import CompressedImage, compress_to_ratio, encode

# --- inputs ----------------------------------------------------------------------------------


def soft_alpha(size: tuple[int, int]) -> Image.Image:
    """An ellipse fading out: every alpha value from 0 to 255 occurs."""
    mask = Image.new("L", size, 0)
    w, h = size
    ImageDraw.Draw(mask).ellipse((w * 0.15, h * 0.15, w * 0.85, h * 0.85), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(min(size) / 12))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, followed by pixel data that is garbage:
    decoding it would fail, so too_many_pixels proves the header alone was judged."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"garbage") + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return photo()


@pytest.fixture(scope="module")
def jpeg_results(picture: Image.Image) -> dict[int, tuple[bytes, CompressedImage]]:
    results = {}
    for quality in (75, 85, 90, 95):
        data = save(picture, "JPEG", quality=quality)
        results[quality] = data, compress_to_ratio(data)
    return results


# --- checks every result must pass ----------------------------------------------------------


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def check(result: CompressedImage, data: bytes, ratio: float = 0.5) -> Image.Image:
    """The guarantee, a decodable output that says what it is, no metadata, usable thumbnails."""
    assert len(result.data) <= int(len(data) * ratio)
    out = decode(result.data)
    assert out.format == result.format
    assert (result.mime_type, result.extension) == {
        "JPEG": ("image/jpeg", "jpg"),
        "WEBP": ("image/webp", "webp"),
    }[result.format]
    assert out.size == (result.width, result.height)
    assert not out.getexif() and "exif" not in out.info and "xmp" not in out.info
    assert "comment" not in out.info
    assert 1 <= result.encodes
    for thumbnail in (result.input_thumbnail, result.output_thumbnail):
        thumb = decode(thumbnail)
        assert thumb.format == result.format
        assert max(thumb.size) <= 256
    assert decode(result.output_thumbnail).size == decode(result.input_thumbnail).size  # side by side
    return out


def assert_best_quality(pixels: Image.Image, result: CompressedImage, budget: int) -> None:
    """The output is exactly PixShift's encode of `pixels` at result.quality, and quality + 1
    overflows; for an image searched on a probe, quality + 2 (the search settles one step below the
    best rather than pay a full encode to confirm that step)."""

    def size(quality: int, settings: str) -> int:
        return len(encode(pixels, quality, fmt=result.format, icc=None, jpeg_encoder=settings))

    # With or without optimized Huffman tables (pixshift.imaging.compress.encoder_for: by source quality).
    matching = [s for s in ("libjpeg-turbo", "libjpeg-turbo-plain") if size(result.quality, s) == len(result.data)]
    assert matching, "the output is not PixShift's encode at its quality"
    settings = matching[0]
    step = 2 if result.probe_encodes else 1
    if result.quality + step <= 100:
        assert size(result.quality + step, settings) > budget


# --- JPEG sources: the main case -------------------------------------------------------------


@pytest.mark.parametrize("source_quality", [75, 85, 90, 95])
def test_jpeg_fits_half_at_the_best_quality(jpeg_results, source_quality):
    data, result = jpeg_results[source_quality]
    check(result, data)
    assert (result.format, result.input_format, result.scale, result.notes) == ("JPEG", "JPEG", 1.0, ())
    assert (result.width, result.height) == (result.input_width, result.input_height) == (1600, 1000)
    assert_best_quality(decode(data), result, len(data) // 2)


def test_jpeg_search_confirms_on_a_probe_with_few_full_size_encodes(jpeg_results):
    """The search runs on a probe of every 4th band of rows; full-size encodes only confirm."""
    encodes = [result.encodes for _, result in jpeg_results.values()]
    assert statistics.mean(encodes) <= 2, encodes
    assert all(result.probe_encodes >= 1 for _, result in jpeg_results.values())
    qualities = {q: result.quality for q, (_, result) in jpeg_results.items()}
    assert qualities[95] > qualities[90] > qualities[85] >= qualities[75] >= 30


def test_other_ratios_and_quality_bounds(picture):
    data = save(picture, "JPEG", quality=90)
    result = compress_to_ratio(data, ratio=0.7, min_quality=40, max_quality=90)
    check(result, data, ratio=0.7)
    assert 40 <= result.quality <= 90
    if result.quality < 89:  # searched on a probe: at the best quality or one step below
        assert len(encode(decode(data), result.quality + 2, fmt="JPEG", icc=None)) > int(len(data) * 0.7)


# MozJPEG's default quantization table (jcparam.c, table 3), the same for luma and chroma.
ROBIDOUX = (
    16, 16, 16, 18, 25, 37, 56, 85, 16, 17, 20, 27, 34, 40, 53, 75,
    16, 20, 24, 31, 43, 62, 91, 135, 18, 27, 31, 40, 53, 74, 106, 156,
    25, 34, 43, 53, 69, 94, 131, 189, 37, 40, 62, 74, 94, 124, 169, 238,
    56, 53, 91, 106, 131, 169, 226, 311, 85, 75, 135, 156, 189, 238, 311, 418,
)  # fmt: skip


def test_jpeg_output_has_mozjpegs_table_and_optimized_huffman_tables(jpeg_results):
    """What a decoder sees: MozJPEG's table scaled as libjpeg scales quality (so the pixels are
    those of that table), and, for a source below quality 90, fewer bytes than the same tables with
    libjpeg's standard Huffman tables."""
    data, result = jpeg_results[85]
    out = decode(result.data)
    q = result.quality
    scale = 5000 / q if q < 50 else 200 - 2 * q
    expected = [min(max((v * scale + 50) // 100, 1), 255) for v in ROBIDOUX]
    assert list(out.quantization[0]) == list(out.quantization[1]) == expected
    standard_huffman = save(decode(data), "JPEG", quality=q, qtables=[list(ROBIDOUX)] * 2)
    assert len(result.data) < 0.97 * len(standard_huffman)


def test_the_mozjpeg_encoder_fits_more_quality_into_the_same_budget(picture):
    """PIXSHIFT_JPEG_ENCODER=mozjpeg: libvips' MozJPEG (trellis quantization) under the same search
    and the same guarantee; at the same bytes it reaches a higher quality, keeping the profile."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = save(picture, "JPEG", quality=90, icc_profile=icc)
    turbo, moz = (compress_to_ratio(data, jpeg_encoder=e) for e in ("libjpeg-turbo", "mozjpeg"))
    out = check(moz, data)
    assert (moz.format, moz.scale, out.info.get("icc_profile")) == ("JPEG", 1.0, icc)
    assert moz.quality > turbo.quality
    pillows = encode(decode(data), moz.quality, fmt="JPEG", icc=icc)  # same table and quality, no trellis
    assert len(moz.data) < len(pillows)


def test_metadata_is_stripped_but_the_icc_profile_kept(picture):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"  # Make
    exif[0x0132] = "2024:01:01 00:00:00"  # DateTime
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    data = save(picture, "JPEG", quality=92, exif=exif, icc_profile=icc, comment=b"secret", xmp=xmp)
    assert {"exif", "comment", "xmp", "icc_profile"} <= decode(data).info.keys()
    result = compress_to_ratio(data)
    out = check(result, data)
    assert out.info.get("icc_profile") == icc
    assert decode(result.input_thumbnail).info.get("icc_profile") == icc


def test_exif_orientation_is_applied(picture):
    stored = picture.resize((400, 300))
    ImageDraw.Draw(stored).rectangle((0, 0, 60, 60), fill=(255, 0, 0))  # marks the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    data = save(stored, "JPEG", quality=95, exif=exif)
    result = compress_to_ratio(data)
    out = check(result, data)
    assert "exif_rotated" in result.notes
    assert (result.input_width, result.input_height) == (result.width, result.height) == (300, 400)
    red, green, _ = out.convert("RGB").getpixel((out.width - 15, 15))  # the marker is now top-right
    assert red > 200 and green < 60
    assert decode(result.input_thumbnail).size == decode(result.output_thumbnail).size == (192, 256)


def test_grayscale_jpeg_stays_grayscale(picture):
    data = save(picture.convert("L"), "JPEG", quality=90)
    result = compress_to_ratio(data)
    out = check(result, data)
    assert out.mode == "L" and result.format == "JPEG"
    assert_best_quality(decode(data), result, len(data) // 2)


def test_cmyk_jpeg_becomes_rgb(picture):
    data = save(picture.resize((800, 500)).convert("CMYK"), "JPEG", quality=90)
    result = compress_to_ratio(data)
    out = check(result, data)
    assert out.mode == "RGB" and "cmyk_to_rgb" in result.notes


# --- other formats ---------------------------------------------------------------------------


def visible(im: Image.Image) -> Image.Image:
    """RGBA with the colour of every fully transparent pixel zeroed: what can be seen."""
    im = im.convert("RGBA")
    return Image.composite(
        im, Image.new("RGBA", im.size, (0, 0, 0, 0)), im.getchannel("A").point(lambda a: 255 * (a > 0))
    )


def test_png_cut_out_becomes_lossless_webp_when_that_fits(picture):
    """A product cut-out (a photo inside a soft mask, the rest transparent, the photo's colours kept
    under it as many tools leave them): lossless WebP drops the invisible colours and is under half
    the PNG's bytes, so the output is exact: every visible pixel and every alpha value."""
    rgba = picture.resize((600, 400)).convert("RGBA")
    mask = Image.new("L", rgba.size, 0)
    mask.paste(soft_alpha((360, 240)), (120, 80))
    rgba.putalpha(mask)
    data = save(rgba, "PNG")
    result = compress_to_ratio(data)
    out = check(result, data)
    assert (result.format, result.input_format, result.encodes) == ("WEBP", "PNG", 1)
    assert "lossless" in result.notes and "alpha_to_webp" in result.notes
    assert ImageChops.difference(visible(out), visible(rgba)).getbbox() is None
    assert decode(result.output_thumbnail).mode == "RGBA"


def test_png_with_soft_alpha_that_lossless_cannot_fit_is_lossy_webp_with_exact_alpha(picture):
    """Grain everywhere: lossless WebP overflows the budget, so the lossy search runs (colour lossy,
    alpha lossless) and spends the budget on the best quality that fits."""
    grain = Image.merge("RGB", [Image.effect_noise((600, 400), 60).convert("L") for _ in range(3)])
    rgba = Image.blend(grain, picture.resize((600, 400)), 0.5).convert("RGBA")
    rgba.putalpha(soft_alpha(rgba.size))
    data = save(rgba, "PNG")
    result = compress_to_ratio(data)
    out = check(result, data)
    assert (result.format, result.input_format) == ("WEBP", "PNG") and "lossless" not in result.notes
    assert out.mode == "RGBA"
    assert ImageChops.difference(out.getchannel("A"), rgba.getchannel("A")).getbbox() is None
    assert_best_quality(rgba, result, len(data) // 2)


def test_lossy_webp_source_is_not_tried_lossless(picture):
    """Re-encoding a lossy WebP without loss would copy its artefacts at several times the bytes."""
    rgba = picture.resize((600, 400)).convert("RGBA")
    rgba.putalpha(soft_alpha(rgba.size))
    data = save(rgba, "WEBP", quality=95, alpha_quality=100)
    result = compress_to_ratio(data)
    check(result, data)
    assert result.format == "WEBP" and "lossless" not in result.notes and result.quality < 100


def test_png_whose_alpha_is_all_opaque_becomes_jpeg(picture):
    data = save(picture.resize((600, 400)).convert("RGBA"), "PNG")
    result = compress_to_ratio(data)
    check(result, data)
    assert result.format == "JPEG" and result.quality == 100 and result.encodes == 1  # the budget allows it


def test_palette_png_with_transparency(picture):
    pal = picture.resize((600, 400)).quantize(255)
    pal.putpalette([*pal.getpalette()[: 255 * 3], 0, 0, 0])  # index 255: the transparent one
    ImageDraw.Draw(pal).rectangle((0, 0, 200, 400), fill=255)
    data = save(pal, "PNG", transparency=255)
    result = compress_to_ratio(data)
    out = check(result, data)
    assert result.format == "WEBP" and "alpha_to_webp" in result.notes
    expected = decode(data).convert("RGBA").getchannel("A")
    assert expected.getextrema() == (0, 255)
    assert ImageChops.difference(out.getchannel("A"), expected).getbbox() is None


def test_16bit_png_is_scaled_not_clipped(picture):
    grey = picture.resize((640, 400)).convert("L")
    data = save(grey.point(lambda v: v * 257, "I").convert("I;16"), "PNG")
    result = compress_to_ratio(data)
    out = check(result, data)
    assert out.mode == "L" and "16bit_to_8bit" in result.notes and result.scale == 1.0
    diff = ImageChops.difference(out, grey)  # clipping would turn almost everything white
    assert statistics.mean(diff.get_flattened_data()) < 3


def test_animated_gif_uses_the_first_frame(picture):
    first = picture.resize((500, 300)).quantize(256)
    second = Image.new("RGB", first.size, (0, 0, 255)).quantize(256)
    data = save(first, "GIF", save_all=True, append_images=[second], duration=100)
    result = compress_to_ratio(data)
    out = check(result, data)
    assert "first_frame_of_animation" in result.notes and result.input_format == "GIF"
    diff = ImageChops.difference(out.convert("RGB"), first.convert("RGB")).convert("L")
    assert statistics.mean(diff.resize((50, 30)).get_flattened_data()) < 12


def test_webp_input_stays_webp_at_full_size(picture):
    data = save(picture.resize((800, 500)), "WEBP", quality=80)
    result = compress_to_ratio(data)
    check(result, data)
    assert (result.format, result.input_format) == ("WEBP", "WEBP")
    assert "downscaled" not in result.notes and result.width == 800


def test_large_png_photo_is_searched_on_a_probe_calibrated_by_the_max_quality_encode(picture):
    """No free point for a PNG: max_quality is encoded at full size first and, when it overflows,
    calibrates the probe the rest of the search runs on; the answer is still the best quality."""
    data = save(picture, "PNG")
    result = compress_to_ratio(data, ratio=0.05)
    check(result, data, ratio=0.05)
    assert (result.format, result.width, result.quality < 100) == ("JPEG", 1600, True)
    assert result.probe_encodes >= 1 and result.encodes <= 3
    assert_best_quality(decode(data).convert("RGB"), result, len(data) // 20)


def test_large_webp_is_searched_at_full_size(picture):
    """WebP's size is not a sum over blocks, so no probe: every step is a full encode."""
    data = save(picture, "WEBP", quality=90)
    result = compress_to_ratio(data)
    check(result, data)
    assert (result.format, result.width, result.probe_encodes) == ("WEBP", 1600, 0)
    assert_best_quality(decode(data).convert("RGB"), result, len(data) // 2)


def test_downscales_when_min_quality_does_not_fit(picture):
    data = save(picture, "JPEG", quality=75)
    result = compress_to_ratio(data, min_quality=70)
    check(result, data)
    assert "downscaled" in result.notes and result.scale < 1
    assert result.quality >= 70 and result.width < 1600
    assert (result.input_width, result.input_height) == (1600, 1000)


def test_threads_get_the_same_bytes_as_one_thread(picture):
    """Each thread encodes into its own memfd: concurrent calls must not mix their files."""
    data = save(picture, "JPEG", quality=90)
    expected = compress_to_ratio(data).data
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: compress_to_ratio(data).data, range(8)))
    assert all(r == expected for r in results)


# --- failures --------------------------------------------------------------------------------


def failure(data: bytes, **kwargs) -> ImageFailure:
    with pytest.raises(ImageFailure) as caught:
        compress_to_ratio(data, **kwargs)
    return caught.value


def test_not_an_image():
    assert failure(random.Random(7).randbytes(5000)).code == "not_an_image"
    assert failure(b"").code == "not_an_image"


def test_truncated_jpeg_is_corrupt(picture):
    data = save(picture, "JPEG", quality=90)
    assert failure(data[: len(data) // 2]).code == "corrupt_image"


def test_too_many_pixels_is_refused_from_the_header():
    error = failure(png_header_only(8000, 8000))
    assert error.code == "too_many_pixels"
    assert "8000x8000 = 64 MP exceeds the limit of 50 MP" in error.message
    assert failure(png_header_only(1000, 1000), max_pixels=999_999).code == "too_many_pixels"


def test_pillow_bomb_limit_is_too_many_pixels():
    error = failure(png_header_only(20000, 20000))  # 400 MP: Pillow refuses it inside Image.open
    assert error.code == "too_many_pixels"
    assert "400 MP" in error.message and "50 MP" in error.message


def test_a_jpeg_with_absurdly_many_scans_is_refused_before_decoding():
    bomb = scan_bomb()
    started = time.thread_time()  # CPU of this thread, which reads the file: not wall time, nor other threads
    error = failure(bomb)
    assert time.thread_time() - started < 0.5  # decoding it would take minutes (test_codec_processes)
    assert (error.code, error.retryable) == ("too_costly", False)
    assert "more than 256 scans" in error.message
    assert failure(scan_bomb((64, 64), 50), max_scans=59).code == "too_costly"  # 10 scans + 50 copies


def test_a_jpeg_with_many_scans_within_the_limit_is_compressed():
    data = scan_bomb((640, 480), 50)  # libjpeg decodes the copies: the file is valid
    check(compress_to_ratio(data, max_scans=60), data)


def test_scan_markers_inside_metadata_do_not_count(picture):
    """FF DA in a comment or an EXIF thumbnail is not a scan: segments are skipped by their length."""
    data = save(picture.resize((320, 200)), "JPEG", quality=90, comment=b"\xff\xda" * 300)
    assert data.count(b"\xff\xda") > 300
    check(compress_to_ratio(data), data)


def test_bad_arguments_are_programming_errors(picture):
    data = save(picture.resize((64, 40)), "PNG")
    bad = (
        {"ratio": 0},
        {"ratio": 1.5},
        {"min_quality": 80, "max_quality": 70},
        {"max_scans": 0},
        {"jpeg_encoder": "x"},
    )
    for kwargs in bad:
        with pytest.raises(ValueError):
            compress_to_ratio(data, **kwargs)


def test_tiny_image_cannot_be_compressed():
    data = save(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG")
    error = failure(data)
    assert error.code == "cannot_compress" and "bytes" in error.message


def test_the_app_refuses_an_unknown_jpeg_encoder(tmp_path):
    """A typo in PIXSHIFT_JPEG_ENCODER stops the service at start, not every image later."""
    from pixshift import create_app

    with pytest.raises(ValueError, match="PIXSHIFT_JPEG_ENCODER"):
        create_app({"TESTING": True, "JPEG_ENCODER": "mozjepg", "INSTANCE_PATH": tmp_path})


def test_a_small_image_downscaled_below_the_thumbnail_size_still_gets_both_thumbnails(picture):
    """The output is smaller than the input's thumbnail box: its thumbnail is enlarged to that box
    (this once crashed the compression child)."""
    data = save(picture.resize((300, 200)), "JPEG", quality=75)
    result = compress_to_ratio(data, min_quality=90)
    check(result, data)
    assert "downscaled" in result.notes and max(result.width, result.height) < 256

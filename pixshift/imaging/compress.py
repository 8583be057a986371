"""Compress an image to a fraction of its bytes ("compress by 50%") at the highest quality that fits.

Pillow (and, as an option, libvips' MozJPEG), in memory, bytes in and bytes out; the pipeline runs
it in a compression child process (``codec_processes``). Pixels are decoded once; every encode goes
to a memfd, since Pillow holds the GIL while encoding into io.BytesIO but releases it for a real
file descriptor (and writes straight into it).

The quality search is model-guided, not a blind binary search (measured Pillow facts in the team's
PERFORMANCE-NOTES):
log(bytes) is close to linear in log(libjpeg's quantization-table scale), a JPEG source gives a free
first point (re-encoding at its own quality gives about its own size), and interpolation between
measured sizes closes in on the answer. For JPEG output of 768 rows or more the search runs on a probe,
every 8th (or 4th) band of 16 rows: a JPEG's size beyond its headers is the sum of its blocks', so
the probe's size estimates the full image's closely at an eighth of the cost. Full-size
encodes only confirm: each one calibrates the probe's estimate, and the search ends at a quality q
whose full encode fits while q + 1 was measured, or predicted by the calibrated probe, to overflow,
or when the calibrated probe puts the overflow at q + 2 (settling one step below the best rather
than paying a full encode for it; bench/README.md, section 7, counts how often each ends it).
Smaller images are searched at full size, where q + 1 is always measured.
Sizes are assumed to grow with quality; libjpeg has rare one-step wiggles (e.g. around q50 and
next to the source's own quality) where a higher quality beyond the first overflow would fit
again; those are not chased.

JPEG encodes use MozJPEG's default quantization table (its table 3, by N. Robidoux, for luma and
chroma alike, through Pillow's ``qtables``) and, for sources below quality 90, optimized Huffman
tables, on every probe and full encode alike: against libjpeg's standard tables without optimize
they look better at the same bytes, low-quality sources need no downscaling, and the search needs
fewer full encodes, so CPU per image does not rise (bench/look.py measures it; the figures per
source band are in bench/README.md). ``jpeg_encoder="mozjpeg"`` encodes through libvips' MozJPEG
instead (trellis quantization, overshoot deringing; the optional ``pyvips`` extra): a higher look
for several times the CPU.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import struct
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, cast

from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from pixshift import config
from pixshift.config import JPEG_ENCODERS
from pixshift.failures import ImageFailure
from pixshift.imaging import formats

# IJG (libjpeg) standard quantization tables, natural order; Pillow's `quantization` uses the same order.
_STD_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_STD_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32  # fmt: skip

# MozJPEG's default table (jcparam.c, table 3: N. Robidoux's, tuned for perceived quality), used for
# luma and chroma alike; libjpeg's quality scaling applies to it as to the standard tables.
_ROBIDOUX = (
    16, 16, 16, 18, 25, 37, 56, 85, 16, 17, 20, 27, 34, 40, 53, 75,
    16, 20, 24, 31, 43, 62, 91, 135, 18, 27, 31, 40, 53, 74, 106, 156,
    25, 34, 43, 53, 69, 94, 131, 189, 37, 40, 62, 74, 94, 124, 169, 238,
    56, 53, 91, 106, 131, 169, 226, 311, 85, 75, 135, 156, 189, 238, 311, 418,
)  # fmt: skip
_ROBIDOUX_TABLES = [list(_ROBIDOUX), list(_ROBIDOUX)]
_PILLOW_JPEG_PARAMS: dict[str, dict[str, object]] = {
    "libjpeg-turbo": {"qtables": _ROBIDOUX_TABLES, "optimize": True},
    "libjpeg-turbo-plain": {"qtables": _ROBIDOUX_TABLES},
    "thumbnail": {},  # libjpeg's own tables, no Huffman optimisation
}
# Optimized Huffman tables make every encode costlier; they buy the most look at low output
# qualities (q75 sources: no downscaling) and little from q90 sources up, whose outputs land at high
# qualities, nor for lossless sources (no free point; PNG photos land near q100). Those keep
# libjpeg's standard Huffman tables (bench/look.py measures both; figures in bench/README.md).
_PLAIN_FROM_SOURCE_QUALITY = 90

# Slope of log(bytes) against log(table scale) used until two measured points give a real one,
# fitted on photo sources (bench/compress_search.py; figures in bench/README.md). Re-encoding a
# JPEG it is steeper for lower source qualities (_default_slope).
_SLOPE_JPEG_SOURCE = 0.53
_SLOPE_FIRST_GENERATION = 0.55  # JPEG from a lossless source
_SLOPE_WEBP = 0.4  # WebP quality mapped through the same scale function
_MAX_DOWNSCALES = 4
_DOWNSCALE_MARGIN = 0.9  # aim min_quality at 90% of the budget when shrinking
_BYTES_PER_PIXELS_EXPONENT = 0.8  # bytes ~ pixels**0.8: a smaller image has more detail per pixel
_THUMBNAIL_QUALITY = 80
# libwebp's lossless effort: on photo cut-outs 10 is about as small as the default 50 for less CPU
# (figures in bench/README.md).
_LOSSLESS_EFFORT = 10
_BAND = 16  # rows per probe band: one MCU row of 4:2:0 JPEG (two of grayscale)
_PROBE_EVERY = (8, 4)  # sample every 8th band, or every 4th of a shorter image
_MIN_PROBE_BANDS = 12  # fewer sampled bands than this and the estimate is too rough: search at full size
_MAX_CONFIRMING_ENCODES = 4
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
# libjpeg decodes every scan of a progressive JPEG into the whole image's coefficients, so a scan of
# a few bytes costs a pass over all of them, and a crafted file of a few MB
# repeats one scan tens of thousands of times: minutes of CPU. Encoders write about 10 scans
# (libjpeg's default script; mozjpeg a dozen or so). 256 is nvImageCodec's default, set after the
# audit of libjpeg-turbo (cure53) that also gave TurboJPEG a scan limit (costs: bench/README.md).
_MAX_JPEG_SCANS = 256
# Where a JPEG marker can start: 0xFF followed by a code; FF00 is a stuffed data byte, not a marker.
_JPEG_MARKER = re.compile(rb"\xff+([^\x00\xff])")
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length


class _Scratch(threading.local):
    file: IO[bytes]  # the encode buffer of this thread
    pid: int  # the process that opened it (a forked child must open its own)


_scratch = _Scratch()

# Part of the key under which results are remembered across requests (pixshift.pipeline.reuse): bump it
# whenever a change here makes different output bytes from the same input and settings (search,
# encoder options, thumbnails, limits such as _MAX_JPEG_SCANS), so results of the old engine are
# made again instead of reused.
ENGINE_VERSION = "2026-12-03.3"

Encoder = Callable[[Image.Image, int], bytes]  # (image, quality) -> file bytes


@dataclass(frozen=True)
class CompressedImage:
    """The compressed file plus what a caller needs to store, serve and explain it."""

    data: bytes  # the output file bytes
    format: str  # "JPEG" or "WEBP"
    mime_type: str  # "image/jpeg" / "image/webp"
    extension: str  # "jpg" / "webp"
    quality: int  # encoder quality of the output
    width: int  # output pixel size
    height: int
    input_format: str  # Pillow format name of the input, e.g. "JPEG", "PNG", "GIF", "WEBP"
    input_width: int  # after EXIF orientation
    input_height: int
    scale: float  # 1.0 unless downscaled to fit
    encodes: int  # full-image encodes the search took, the final one included
    probe_encodes: int  # encodes of the search's probe (an eighth of the rows; see _probe)
    notes: tuple[str, ...]  # what was done besides quality, e.g. "exif_rotated", "downscaled"
    input_thumbnail: bytes  # JPEG (WebP if alpha), long side <= thumbnail_size, of the oriented input
    output_thumbnail: bytes  # same, made from the output's pixels


def compress_to_ratio(
    data: bytes,
    *,
    ratio: float = config.COMPRESSION_RATIO,
    max_pixels: int = config.MAX_IMAGE_PIXELS,
    min_quality: int = config.MIN_QUALITY,
    max_quality: int = config.MAX_QUALITY,
    thumbnail_size: int = config.THUMBNAIL_SIZE,
    max_scans: int = _MAX_JPEG_SCANS,
    jpeg_encoder: str = JPEG_ENCODERS[0],
) -> CompressedImage:
    """Re-encode `data` to at most floor(len(data) * ratio) bytes at the highest quality that fits.

    JPEG stays JPEG, WebP stays WebP, images with real transparency become WebP (lossy colour,
    lossless alpha), the rest becomes JPEG. Only if min_quality does not fit is the image downscaled.
    Raises ImageFailure ("not_an_image", "corrupt_image", "too_many_pixels", "too_costly",
    "unsupported_image", "cannot_compress").
    A JPEG of more than ``max_scans`` scans is refused before decoding. A lossless source with
    transparency becomes lossless WebP when that fits: exact pixels are the best look there is.
    """
    _check_arguments(ratio, max_pixels, min_quality, max_quality, thumbnail_size, max_scans)
    if jpeg_encoder not in JPEG_ENCODERS:
        raise ValueError(f"jpeg_encoder must be one of {', '.join(JPEG_ENCODERS)}, got {jpeg_encoder!r}")
    budget = math.floor(len(data) * ratio)
    notes: list[str] = []
    source = _open(data, max_pixels, max_scans)
    image, icc = _pixels(_decode_upright(source, notes), notes)
    # WebP stays WebP (a WebP re-encoded as JPEG needs far more bytes for the same look).
    fmt = "WEBP" if image.mode == "RGBA" or source.format == "WEBP" else "JPEG"
    jpeg_encoder = encoder_for(source, jpeg_encoder)
    encoder = functools.partial(encode, fmt=fmt, icc=icc, jpeg_encoder=jpeg_encoder)
    # Thumbnails are small previews: libjpeg's plain encode (much cheaper than optimized Huffman
    # tables or trellis at this size) is all they need.
    cheap = functools.partial(encode, fmt=fmt, icc=icc, jpeg_encoder="thumbnail")
    prior = _free_point(source, len(data), icc) if fmt == "JPEG" and "cmyk_to_rgb" not in notes else None

    input_thumbnail, box = _input_thumbnail(image, cheap, thumbnail_size)
    lossless = _lossless_webp(image, icc, budget) if fmt == "WEBP" and _is_lossless(source, data) else None
    if lossless is not None:
        output, quality, size, encodes, probes = lossless, 100, image.size, 1, 0
        notes.append("lossless")
    else:
        output, quality, size, encodes, probes = _fit(image, encoder, fmt, budget, min_quality, max_quality, prior)
    if size != image.size:
        notes.append("downscaled")
    return CompressedImage(
        data=output,
        format=fmt,
        mime_type=formats.mime_type(fmt),
        extension="jpg" if fmt == "JPEG" else "webp",
        quality=quality,
        width=size[0],
        height=size[1],
        input_format=source.format or "unknown",
        input_width=image.width,
        input_height=image.height,
        scale=size[0] / image.width,
        encodes=encodes,
        probe_encodes=probes,
        notes=tuple(notes),
        input_thumbnail=input_thumbnail,
        output_thumbnail=_output_thumbnail(output, cheap, box),
    )


def _check_arguments(ratio: float, max_pixels: int, qmin: int, qmax: int, thumb: int, scans: int) -> None:
    """Programming errors are ValueError, not ImageFailure: no image is at fault."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if not 1 <= qmin <= qmax <= 100:
        raise ValueError(f"need 1 <= min_quality <= max_quality <= 100, got {qmin}, {qmax}")
    if max_pixels < 1 or thumb < 1 or scans < 1:
        raise ValueError("max_pixels, thumbnail_size and max_scans must be positive")


# --- reading ---------------------------------------------------------------------------------


def _open(data: bytes, max_pixels: int, max_scans: int) -> ImageFile.ImageFile:
    """Read only the header, so a decompression bomb (pixels, or a JPEG's scans) is refused before
    any pixel is decoded."""
    if not data:
        raise ImageFailure("not_an_image", "the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _pillow_bomb(e, max_pixels) from e
    except UnidentifiedImageError as e:
        raise ImageFailure("not_an_image", "the bytes are not in any image format we can read") from e
    except _DECODE_ERRORS as e:
        raise ImageFailure("corrupt_image", f"the image header is damaged: {e}") from e
    width, height = image.size
    if width * height > max_pixels:
        raise ImageFailure(
            "too_many_pixels",
            f"the image size {width}x{height} = {_megapixels(width * height)} MP "
            f"exceeds the limit of {_megapixels(max_pixels)} MP",
        )
    if image.format in ("JPEG", "MPO") and _too_many_scans(data, max_scans):
        raise ImageFailure(
            "too_costly",
            f"the JPEG has more than {max_scans} scans (a progressive JPEG normally has about 10); "
            "decoding each one costs a pass over the whole image",
        )
    return image


def _too_many_scans(data: bytes, limit: int) -> bool:
    """Whether a JPEG has more than `limit` start-of-scan markers. Every one contains the bytes FF DA,
    so a plain count settles nearly every file cheaply; past the limit, the segments are
    followed as libjpeg does, so FF DA inside a segment's body (an EXIF thumbnail in APP1) does not
    count: a segment's length skips its body, and the search for the next marker skips a scan's
    entropy-coded data and any garbage between segments, which libjpeg skips too."""
    if data.count(b"\xff\xda") <= limit:
        return False
    scans, pos = 0, 2  # after SOI
    while scans <= limit and (marker := _JPEG_MARKER.search(data, pos)):
        code, pos = marker[1][0], marker.end()
        if code == 0xD9:  # EOI: libjpeg reads no further
            break
        if code == 0xDA:
            scans += 1
        if code not in _JPEG_STANDALONE:
            pos += int.from_bytes(data[pos : pos + 2], "big")
    return scans > limit


def _pillow_bomb(error: Exception, max_pixels: int | None) -> ImageFailure:
    """Pillow refuses images over twice its MAX_IMAGE_PIXELS inside Image.open, before we see the
    size; its message has the pixel count but not the width and height."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    if found and max_pixels is not None and int(found[1]) > max_pixels:
        return ImageFailure(
            "too_many_pixels",
            f"the image size {_megapixels(int(found[1]))} MP exceeds the limit of {_megapixels(max_pixels)} MP",
        )
    return ImageFailure("too_many_pixels", f"Pillow refuses the image as a decompression bomb: {error}")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}".removesuffix(".0")


def _decode_upright(source: ImageFile.ImageFile, notes: list[str]) -> Image.Image:
    """The one full decode: first frame only, turned the way EXIF says the camera was held."""
    image: Image.Image = source
    try:
        if getattr(image, "is_animated", False):
            notes.append("first_frame_of_animation")
        if any(";16" in str(tile.args) for tile in source.tile):  # e.g. PNG "RGB;16B", "I;16B"
            notes.append("16bit_to_8bit")
        image.load()
        if image.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
            notes.append("exif_rotated")
            image = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _pillow_bomb(e, None) from e
    except _DECODE_ERRORS as e:
        raise ImageFailure("corrupt_image", f"the image data is damaged or truncated: {e}") from e
    return image


def _pixels(image: Image.Image, notes: list[str]) -> tuple[Image.Image, bytes | None]:
    """Pixels in an encodable mode, with all metadata dropped except an ICC profile that matches
    the output (it is colour data: without it a wide-gamut photo looks washed out)."""
    icc = image.info.get("icc_profile") or None
    try:
        image = _convert(image, notes)
    except ValueError as e:  # e.g. LAB or HSV, which Pillow cannot turn into RGB
        raise ImageFailure("unsupported_image", f"cannot convert colour mode {image.mode}: {e}") from e
    image.info = {}  # Pillow copies some of info (e.g. the JPEG comment) into saved files
    wanted = b"GRAY" if image.mode == "L" else b"RGB "  # a CMYK profile goes with the CMYK pixels
    return image, icc if icc and icc[16:20] == wanted else None


def _convert(image: Image.Image, notes: list[str]) -> Image.Image:
    """L or RGB; RGBA only when some pixel is actually see-through (that costs WebP)."""
    if image.mode == "CMYK":
        notes.append("cmyk_to_rgb")
        return image.convert("RGB")
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        if "16bit_to_8bit" not in notes:
            notes.append("16bit_to_8bit")
        return _to_8bit(image)
    if image.has_transparency_data:  # alpha band, or a transparent palette entry or colour
        rgba = image.convert("RGBA")
        alpha_min, _ = cast(tuple[float, float], rgba.getchannel("A").getextrema())  # one band: (min, max)
        if alpha_min < 255:
            notes.append("alpha_to_webp")
            return rgba
    target = "L" if image.mode in ("1", "L", "LA", "La") else "RGB"
    return image if image.mode == target else image.convert(target)


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit samples down; Pillow's own convert("L") clips everything above 255 to white."""
    if image.mode == "F":
        return image.convert("L")
    image = image if image.mode == "I" else image.convert("I")
    _, top = cast(tuple[float, float], image.getextrema())  # one band ("I"): (min, max)
    if top <= 255:
        return image.convert("L")
    return image.point(lambda v: v / 257).convert("L")


# --- the size model --------------------------------------------------------------------------


def _table_scale(quality: float) -> float:
    """libjpeg's quality -> percentage scale of the standard tables (the model's x axis)."""
    return max(5000 / quality if quality < 50 else 200 - 2 * quality, 1.0)


def _quality_for_scale(scale: float) -> float:
    return (200 - scale) / 2 if scale <= 100 else 5000 / scale


def _free_point(source: Image.Image, nbytes: int, icc: bytes | None) -> tuple[float, int] | None:
    """The free first point (quality, bytes) of a JPEG source: re-encoded with tables as coarse as
    its own it comes out at about its own size, less the metadata we drop. Our table is MozJPEG's,
    so the point's quality is the one whose scaled table sums to the source's luma table. From the
    header: no encode."""
    if jpeg_quality(source) is None:
        return None
    luma = getattr(source, "quantization", {})[0]
    quality = min(max(_quality_for_scale(100 * sum(luma) / sum(_ROBIDOUX)), 1.0), 100.0)
    metadata = sum(len(segment) + 4 for _, segment in getattr(source, "applist", []))
    return quality, max(nbytes - metadata + len(icc or b""), 1)


def encoder_for(source: Image.Image, jpeg_encoder: str) -> str:
    """The encoder settings a source's JPEG output is made with (``encode``'s ``jpeg_encoder``):
    libjpeg-turbo keeps its standard Huffman tables for sources of _PLAIN_FROM_SOURCE_QUALITY up."""
    if jpeg_encoder == "libjpeg-turbo" and (jpeg_quality(source) or 100) >= _PLAIN_FROM_SOURCE_QUALITY:
        return "libjpeg-turbo-plain"
    return jpeg_encoder


def jpeg_quality(image: Image.Image) -> int | None:
    """The quality a JPEG was saved at, from its quantization tables; None if not a JPEG."""
    tables = getattr(image, "quantization", None) or {}
    if image.format != "JPEG" or 0 not in tables:
        return None
    return _quality_of_tables(tuple(tables[0]), tuple(tables.get(1, ())))


@functools.lru_cache(maxsize=256)
def _quality_of_tables(luma: tuple[int, ...], chroma: tuple[int, ...] = ()) -> int:
    """The libjpeg quality whose scaled standard tables best match these (exact for files written
    by libjpeg, so by Pillow and most software; the nearest equivalent for other tables). Cached:
    a batch's images mostly share their tables, and the comparison is pure Python."""
    pairs = [(luma, _STD_LUMA)] + ([(chroma, _STD_CHROMA)] if chroma else [])

    def mismatch(quality: int) -> float:
        scale = _table_scale(quality)
        return sum(
            abs(value - min(max((base * scale + 50) // 100, 1), 255))
            for table, std in pairs
            for value, base in zip(table, std)
        )

    guess = round(_quality_for_scale(100 * sum(luma) / sum(_STD_LUMA)))
    return min(range(max(1, guess - 3), min(100, guess + 3) + 1), key=mismatch)


# --- encoding --------------------------------------------------------------------------------


class _ScratchFile:
    """One thread's scratch file, closed when the thread ends (its thread-local data goes) or when a
    forked child replaces the one it inherited, rather than left for the garbage collector."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        try:
            self.file: IO[bytes] = os.fdopen(os.memfd_create("pixshift-encode", os.MFD_CLOEXEC), "w+b")
        except (AttributeError, OSError):  # not Linux: a temporary file also has a real descriptor
            self.file = tempfile.TemporaryFile()

    def __del__(self) -> None:
        file = getattr(self, "file", None)
        if file is not None:
            file.close()


def _scratch_file() -> IO[bytes]:
    """This thread's in-memory file with a real descriptor (reopened after a fork: no sharing)."""
    scratch = getattr(_scratch, "scratch", None)
    if scratch is None or scratch.pid != os.getpid():
        _scratch.scratch = scratch = _ScratchFile()  # an inherited one closes this process's copy
    return scratch.file


def encode(
    image: Image.Image,
    quality: int,
    *,
    fmt: str,
    icc: bytes | None,
    jpeg_encoder: str = JPEG_ENCODERS[0],
    lossless: bool = False,
) -> bytes:
    """Encode into the scratch memfd, so Pillow releases the GIL, and read the bytes back.
    ``lossless`` (WebP only): exact pixels; ``quality`` is not used."""
    params: dict[str, object] = {"quality": quality}
    if lossless:
        # exact=False: the colour under a fully transparent pixel may change (it cannot be seen)
        params.update(lossless=True, quality=_LOSSLESS_EFFORT, exact=False)
    elif fmt == "WEBP":
        params["alpha_quality"] = 100  # lossless alpha: transparency must survive exactly
    elif jpeg_encoder == "mozjpeg":
        return _encode_mozjpeg(image, quality, icc)
    else:
        params.update(_PILLOW_JPEG_PARAMS[jpeg_encoder])
    if icc:
        params["icc_profile"] = icc
    return _save(image, fmt, params)


def _save(image: Image.Image, fmt: str, params: dict[str, object]) -> bytes:
    file = _scratch_file()
    file.seek(0)
    file.truncate()
    try:
        image.save(file, fmt, **params)
        file.flush()
        fd = file.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        file.seek(0)
        file.truncate()  # give the memory back between images


def _encode_mozjpeg(image: Image.Image, quality: int, icc: bytes | None) -> bytes:
    """libvips' MozJPEG encoder on our pixels: its default table, trellis quantization and
    deringing, baseline, optimized Huffman tables, 4:2:0 as Pillow writes. libvips runs outside
    the GIL."""
    import pyvips  # the optional extra; pixshift.config refuses the setting without it

    bands = len(image.getbands())
    vips = pyvips.Image.new_from_memory(image.tobytes(), image.width, image.height, bands, "uchar")
    vips = vips.copy(interpretation="b-w" if bands == 1 else "srgb")
    if icc:
        vips.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
    data: bytes = vips.jpegsave_buffer(
        Q=quality,
        optimize_coding=True,
        trellis_quant=True,
        overshoot_deringing=True,
        quant_table=3,
        subsample_mode="on",
        keep="icc" if icc else "none",
    )
    return data


def _is_lossless(source: ImageFile.ImageFile, data: bytes) -> bool:
    """Whether the source's pixels are exact (PNG, GIF, lossless WebP...): re-encoding a lossy
    source losslessly would only copy its artefacts at great cost."""
    if source.format != "WEBP":
        return source.format in ("PNG", "GIF", "BMP", "TIFF", "PPM", "TGA")
    pos = 12  # RIFF chunks after "RIFF", size, "WEBP": the image data is in VP8 (lossy) or VP8L
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if tag in (b"VP8 ", b"VP8L"):
            return tag == b"VP8L"
        pos += 8 + size + (size & 1)
    return False


def _lossless_webp(image: Image.Image, icc: bytes | None, budget: int) -> bytes | None:
    """Lossless WebP when it fits the budget (it does for typical product cut-outs, whose
    transparent surroundings cost nothing), else None and the lossy search runs."""
    data = encode(image, 100, fmt="WEBP", icc=icc, lossless=True)
    return data if len(data) <= budget else None


# --- the search ------------------------------------------------------------------------------


def _fit(
    image: Image.Image,
    encode: Encoder,
    fmt: str,
    budget: int,
    qmin: int,
    qmax: int,
    prior: tuple[float, int] | None,
) -> tuple[bytes, int, tuple[int, int], int, int]:
    """Search quality at full size; only if min_quality overflows, shrink and search again.

    Returns (output, quality, output size, full-size encodes, probe encodes)."""
    smallest = len(encode(image.crop((0, 0, 1, 1)), qmin))  # headers and tables alone
    if smallest > budget:
        raise ImageFailure(
            "cannot_compress",
            f"the budget is {budget} bytes, but even a 1x1 image at quality {qmin} takes {smallest}",
        )
    slope = _default_slope(fmt, prior[0] if prior else None)
    # The probe's estimate rests on JPEG's fixed block coding; WebP adapts to the whole picture.
    found, probes = (
        _search_with_probe(image, encode, budget, smallest, qmin, qmax, prior, slope) if fmt == "JPEG" else (None, 0)
    )
    if found is not None:
        found_output, quality, encodes = found
        return found_output, quality, image.size, encodes, probes
    work, encodes = image, 0
    for _ in range(_MAX_DOWNSCALES + 1):
        output, quality, tried = _search_quality(work, encode, budget, qmin, qmax, prior, slope)
        encodes += len(tried)
        if output is not None:
            return output, quality, work.size, encodes, probes
        if work.size == (1, 1):
            break
        work, prior = _shrink(image, work, dict(tried)[qmin], budget, smallest, qmin)
        slope = _default_slope(fmt, None)
    raise ImageFailure(
        "cannot_compress",
        f"even at {work.width}x{work.height} and quality {qmin} the image exceeds {budget} bytes",
    )


def _probe(image: Image.Image) -> tuple[Image.Image, float] | None:
    """Every n-th band of 16 rows, stacked: a small image whose encoded size, beyond the headers,
    is that fraction of the full image's. Bands are whole 4:2:0 MCU rows, so each block is coded
    exactly as in the full image; only the sampling of the picture's detail makes it an estimate
    (corrected by the full encodes). None when the image is too short to sample."""
    bands = image.height // _BAND
    every = next((n for n in _PROBE_EVERY if bands >= n * _MIN_PROBE_BANDS), None)
    if every is None:
        return None
    chosen = range(every // 2, bands, every)
    probe = Image.new(image.mode, (image.width, len(chosen) * _BAND), None)  # every row is pasted over
    for i, band in enumerate(chosen):
        probe.paste(image.crop((0, band * _BAND, image.width, (band + 1) * _BAND)), (0, i * _BAND))
    return probe, probe.height / image.height


def _search_with_probe(
    image: Image.Image,
    encode: Encoder,
    budget: int,
    fixed: int,
    qmin: int,
    qmax: int,
    prior: tuple[float, int] | None,
    slope: float,
) -> tuple[tuple[bytes, int, int] | None, int]:
    """The quality search run on a probe (an eighth of the rows), full-size encodes only to confirm.

    Each round searches the probe for the highest quality predicted to fit (exactly, on the probe,
    against the budget scaled to it), encodes the full image there once, and rescales the probe's
    budget by how the full encode compared with its probe: the probe's sampling error is mostly a
    constant factor, so one full encode calibrates it. Stops when the last full encode that fits
    is at max_quality, or the next quality is measured or (calibrated) predicted to overflow.
    Returns ((output, quality, full encodes) or None if min_quality never fit, probe encodes)."""
    sampled = _probe(image)
    if sampled is None:
        return None, 0
    probe, fraction = sampled
    sizes: dict[int, int] = {}

    def encode_probe(im: Image.Image, quality: int) -> bytes:
        data = encode(im, quality)
        sizes[quality] = len(data)
        return data

    probe_prior = (prior[0], round(fixed + (prior[1] - fixed) * fraction)) if prior else None
    probe_budget = fixed + (budget - fixed) * fraction
    lo, hi, best, encodes = qmin - 1, qmax + 1, None, 0
    # Without a free point (not a JPEG source: PNG, GIF, WebP) max_quality is the likeliest answer,
    # and one full encode there beats any probe; if it overflows, it calibrates the probe.
    quality: int | None = qmax if prior is None else None
    while hi - lo > 1 and encodes < _MAX_CONFIRMING_ENCODES:
        if quality is None:  # search the probe for the next quality to confirm
            _, quality, _ = _search_quality(
                probe, encode_probe, probe_budget, lo + 1, hi - 1, probe_prior, slope, sizes
            )
            # Nothing above the last fit is predicted to fit, or only the next step: settle there
            # rather than pay a full encode to confirm that step (bench section 9 checks the look).
            if quality <= lo or (best is not None and quality == lo + 1):
                break
        data = encode(image, quality)
        encodes += 1
        if len(data) <= budget:
            lo, best = quality, data
        else:
            hi = quality
        if hi - lo <= 1:
            break
        if quality not in sizes:
            encode_probe(probe, quality)
        probe_budget = fixed + (budget - fixed) * (sizes[quality] - fixed) / max(len(data) - fixed, 1)
        quality = None
    return ((best, lo, encodes) if best is not None else None), len(sizes)


def _default_slope(fmt: str, source_quality: float | None) -> float:
    """Slope of log(bytes) against log(table scale) until two measured points give a local one.
    Lower-quality JPEG sources lose bytes faster when re-encoded (fitted on the bench corpus)."""
    if fmt == "WEBP":
        return _SLOPE_WEBP
    if source_quality is None:
        return _SLOPE_FIRST_GENERATION
    return _SLOPE_JPEG_SOURCE + 0.02 * max(0.0, 85 - source_quality)


def _shrink(
    original: Image.Image, current: Image.Image, qmin_bytes: int, budget: int, fixed: int, qmin: int
) -> tuple[Image.Image, tuple[float, int]]:
    """Downscale so min_quality should fit, taking the bytes beyond the fixed headers to follow
    pixels**0.8 (measured; plain bytes ~ pixels undershoots and costs another round).

    Returns the smaller image and the model point it was aimed at, which seeds the next search."""
    wanted = _DOWNSCALE_MARGIN * (budget - fixed) / max(qmin_bytes - fixed, 1)
    area = wanted ** (1 / _BYTES_PER_PIXELS_EXPONENT)
    factor = min(math.sqrt(area), 0.95) * current.width / original.width
    size = (max(1, int(original.width * factor)), max(1, int(original.height * factor)))
    smaller = original.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    shrunk = (size[0] * size[1] / (current.width * current.height)) ** _BYTES_PER_PIXELS_EXPONENT
    return smaller, (qmin, round(fixed + (qmin_bytes - fixed) * shrunk))


def _search_quality(
    image: Image.Image,
    encode: Encoder,
    budget: float,
    qmin: int,
    qmax: int,
    prior: tuple[float, int] | None,
    slope: float,
    known: dict[int, int] | None = None,
) -> tuple[bytes | None, int, list[tuple[int, int]]]:
    """Highest quality in [qmin, qmax] whose encode fits, keeping that encode as the output.
    `known` sizes (quality -> bytes, measured earlier) narrow the range and seed the model.

    Invariant: lo fits (or is qmin - 1), hi overflows (or is qmax + 1); stop when they touch."""
    lo, hi, best = qmin - 1, qmax + 1, None
    tried: list[tuple[int, int]] = []
    for quality, nbytes in sorted((known or {}).items()):
        if lo < quality < hi:
            tried.append((quality, nbytes))
            lo, hi = (quality, hi) if nbytes <= budget else (lo, quality)
    while hi - lo > 1:
        quality = _next_quality(tried, lo, hi, budget, prior, slope)
        data = encode(image, quality)
        tried.append((quality, len(data)))
        if len(data) <= budget:
            lo, best = quality, data
        else:
            hi = quality
    return best, lo, tried


def _next_quality(
    tried: list[tuple[int, int]],
    lo: int,
    hi: int,
    budget: float,
    prior: tuple[float, int] | None,
    slope: float,
) -> int:
    """Where the size model says the budget is crossed, strictly between lo and hi.

    Works on (log table scale, log bytes) points. With a point on each side of the budget (the
    free point stands in for a side not yet measured), interpolate; otherwise extrapolate from the
    nearest point. Guesses lean upwards (+0.3, and +1 while nothing has overflowed): q and q + 1
    must both be encoded anyway, and the predictions measured short on the fitting side."""
    if not tried and prior is None:
        return hi - 1  # no model yet: max_quality is the likeliest single-encode answer
    target = math.log(budget)
    measured = {q: _point(q, n) for q, n in tried}
    model = _point(*prior) if prior else None
    below = measured.get(lo) or (model if model and model[1] <= target else None)
    above = measured.get(hi) or (model if model and model[1] > target else None)
    if below and above:
        x = _interpolate(below, above, target, [n <= budget for _, n in tried[-2:]])
    else:
        anchor = below or above
        assert anchor is not None  # lo or hi is a measured quality, or the free point lies on one side
        x = _extrapolate(anchor, list(measured.values()), target, slope)
    quality = math.floor(_quality_for_scale(math.exp(x)) + 0.3)
    if tried and hi not in measured:
        quality += 1
    return min(max(quality, lo + 1), hi - 1)


def _point(quality: float, nbytes: int) -> tuple[float, float]:
    return math.log(_table_scale(quality)), math.log(nbytes)


def _interpolate(below: tuple[float, float], above: tuple[float, float], target: float, last_fits: list[bool]) -> float:
    """Regula falsi; when the same end was kept twice, halve its pull (Illinois), so a curved
    stretch cannot make the search creep one quality step at a time."""
    if last_fits == [True, True]:
        above = (above[0], target + (above[1] - target) / 2)
    elif last_fits == [False, False]:
        below = (below[0], target + (below[1] - target) / 2)
    return below[0] + (target - below[1]) * (above[0] - below[0]) / (above[1] - below[1])


def _extrapolate(
    anchor: tuple[float, float], measured: list[tuple[float, float]], target: float, slope: float
) -> float:
    """Follow the local slope of the two nearest measured points on the anchor's side (the curve
    has flat stretches a global slope overshoots), else the default slope."""
    side = sorted(
        (p for p in measured if (p[1] <= target) == (anchor[1] <= target) and p != anchor),
        key=lambda p: abs(p[1] - target),
    )
    if side and abs(side[0][0] - anchor[0]) > 0.01:
        local = (side[0][1] - anchor[1]) / (anchor[0] - side[0][0])
        slope = min(max(local, 0.1), 2.0)
    return anchor[0] + (anchor[1] - target) / slope


# --- thumbnails ------------------------------------------------------------------------------


def _input_thumbnail(image: Image.Image, encode: Encoder, longest: int) -> tuple[bytes, tuple[int, int]]:
    """Shrink the decode we already have: no second decode. A large image is box-averaged by the
    whole factor that brings its long side to at most `longest` (that factor is 4 or more, so
    the side lands within 75-100% of it, and a Lanczos step to the exact size
    would cost as much again); a smaller one gets Lanczos to exactly `longest`, which is cheap there.
    Returns the thumbnail and its size."""
    factor = -(-max(image.size) // longest)
    if factor >= 4:
        small = image.reduce(factor)
    else:
        scale = min(1.0, longest / max(image.size))
        box = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.resize(box, Image.Resampling.LANCZOS, reducing_gap=1.0)
    return encode(small, _THUMBNAIL_QUALITY), small.size


def _output_thumbnail(data: bytes, encode: Encoder, box: tuple[int, int]) -> bytes:
    """Thumbnail of what we ship, the size of the input's. For JPEG, draft() makes the decoder scale
    down by 2, 4 or 8 in the DCT (at 1/8, a fraction of a full decode): the largest
    factor whose decode (libjpeg rounds its sides up) still covers the box, and for the input's
    box-reduced thumbnail that is its own factor, so no resize is left. Pillow's draft() would
    pick the factor from the box by rounding down (a larger decode), so it is asked for the
    factor's exact size. Lanczos covers any rest."""
    output: Image.Image = Image.open(io.BytesIO(data))
    width, height = output.size
    # 1 also when a downscaled output is smaller than the box: Lanczos enlarges it to the box
    factor = next((f for f in (8, 4, 2) if -(-width // f) >= box[0] and -(-height // f) >= box[1]), 1)
    output.draft(output.mode, (max(width // factor, 1), max(height // factor, 1)))  # no-op for WebP
    if output.size != box:
        output = output.resize(box, Image.Resampling.LANCZOS, reducing_gap=1.0)
    return encode(output, _THUMBNAIL_QUALITY)

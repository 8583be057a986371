"""Image formats as PixShift names them: Pillow's format name, file extension and MIME type, in one table."""

from __future__ import annotations

# Pillow format -> (extension, MIME type). Anything else is stored and served as opaque bytes.
_FORMATS = {
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "PNG": ("png", "image/png"),
    "GIF": ("gif", "image/gif"),
    "TIFF": ("tif", "image/tiff"),
    "BMP": ("bmp", "image/bmp"),
}
OPAQUE = ("bin", "application/octet-stream")
EXTENSIONS = (*tuple(ext for ext, _ in _FORMATS.values()), OPAQUE[0])
_BY_EXTENSION = dict(_FORMATS.values())


def extension(fmt: str | None) -> str:
    return _FORMATS.get(fmt or "", OPAQUE)[0]


def mime_type(fmt: str | None) -> str:
    return _FORMATS.get(fmt or "", OPAQUE)[1]


def mime_type_of_extension(ext: str) -> str:
    return _BY_EXTENSION.get(ext, OPAQUE[1])

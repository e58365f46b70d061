"""Decide whether bytes are an accepted image by magic bytes and a header parse.

Never by the filename or the client's Content-Type. Only the header is parsed
here; pixels are decoded by the worker, which reports undecodable files per file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image

# Pillow format name -> (content type, magic byte prefixes)
ACCEPTED_FORMATS: dict[str, tuple[str, tuple[bytes, ...]]] = {
    "JPEG": ("image/jpeg", (b"\xff\xd8\xff",)),
    "PNG": ("image/png", (b"\x89PNG\r\n\x1a\n",)),
    "WEBP": ("image/webp", (b"RIFF",)),
    "BMP": ("image/bmp", (b"BM",)),
    "TIFF": ("image/tiff", (b"II*\x00", b"MM\x00*")),
}
# Pillow's own decompression-bomb limit. (The API draws annotated images from a reduced decode,
# ``app/reduced_decode.py``; the workers have a pixel cap of their own, WORKER_MAX_IMAGE_PIXELS.)
MAX_PIXELS = 89_478_485
HEADER_BYTES = 16


class NotAnImage(ValueError):
    """The bytes are not one of the accepted image formats."""


class ImageTooLarge(ValueError):
    """The header declares more pixels than a worker should be asked to decode."""


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


def _format_by_magic(head: bytes) -> str | None:
    for name, (_, prefixes) in ACCEPTED_FORMATS.items():
        if any(head.startswith(prefix) for prefix in prefixes):
            if name == "WEBP" and head[8:12] != b"WEBP":
                continue
            return name
    return None


def identify_image(stream: BinaryIO) -> ImageInfo:
    """Identify an image from a seekable stream; raise :class:`NotAnImage` otherwise."""
    stream.seek(0)
    magic = _format_by_magic(stream.read(HEADER_BYTES))
    if magic is None:
        raise NotAnImage("the file is not a JPEG, PNG, WebP, BMP or TIFF image")
    stream.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below against MAX_PIXELS
            with Image.open(stream, formats=[magic]) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the image has too many pixels (the limit is {MAX_PIXELS:,})") from exc
    except Exception as exc:  # Pillow raises many types for a broken header
        raise NotAnImage(f"the file starts like {magic} but its header cannot be read") from exc
    finally:
        stream.seek(0)
    if width <= 0 or height <= 0:
        raise NotAnImage("the image has no pixels")
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(f"the image has too many pixels ({width}x{height}; the limit is {MAX_PIXELS:,})")
    return ImageInfo(ACCEPTED_FORMATS[magic][0], width, height)

"""What an image's header says, read without decoding a pixel, and the rules both of its decoders follow.

Whether bytes are an accepted image is decided by magic bytes and a header parse,
never by the filename or the client's Content-Type. Pixels are decoded twice over,
each side with its own library: the worker predicts on OpenCV's decode
(``tasks/detection.py``) and the API draws the stored boxes on Pillow's
(``app/reduced_decode.py``). So that the boxes land where they were found, both
decoders take from here the two decisions that place pixels:

- the EXIF orientation (:func:`exif_orientation`), how it turns the stored pixels
  upright (:data:`UPRIGHT`, :func:`turn_left`) and the size it shows them at (:func:`upright_size`),
  in which the stored boxes are;
- the power of two a large image is reduced by while it is decoded (:func:`reduction`).

What the service refuses of a file's bytes, an image's or a video's (:class:`MediaRefused`), is declared
here too, in the module ``storage/media.py`` builds on.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS  # 178,956,970: past it Pillow refuses to open the file at all
HEADER_BYTES = 16


# The EXIF tag that says how the stored pixels are turned for display.
ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Turn:
    """How stored pixels are turned upright: rows and columns swapped first, then mirrored."""

    transpose: bool = False
    mirror_left_right: bool = False
    mirror_top_bottom: bool = False


# EXIF orientation -> the turn that shows the image upright (1, and any value not listed: none).
UPRIGHT = {
    2: Turn(mirror_left_right=True),
    3: Turn(mirror_left_right=True, mirror_top_bottom=True),
    4: Turn(mirror_top_bottom=True),
    5: Turn(transpose=True),
    6: Turn(transpose=True, mirror_left_right=True),  # a quarter turn clockwise
    7: Turn(transpose=True, mirror_left_right=True, mirror_top_bottom=True),
    8: Turn(transpose=True, mirror_top_bottom=True),  # a quarter turn anticlockwise
}


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image, read without decoding pixels (Pillow's PNG ``getexif``
    would load the whole image, so a PNG's eXIf chunk is read from the header). An EXIF block Pillow
    cannot read counts as none: the image is shown as stored."""
    try:
        if image.format != "PNG":
            return int(image.getexif().get(ORIENTATION_TAG, 1))
        raw = image.info.get("exif")  # an eXIf chunk before the image data
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(ORIENTATION_TAG, 1))
    except Exception:  # Pillow raises many types for a broken EXIF block
        return 1


def turn_left(image: Image.Image, orientation: int) -> Turn | None:
    """The turn EXIF ``orientation`` still asks of what Pillow opened: none for a TIFF, which Pillow presents
    upright already (its size, and its pixels when loaded)."""
    return None if image.format == "TIFF" else UPRIGHT.get(orientation)


def upright_size(image: Image.Image, orientation: int) -> tuple[int, int]:
    """The opened image's size as shown upright."""
    width, height = image.size
    turn = turn_left(image, orientation)
    return (height, width) if turn is not None and turn.transpose else (width, height)


def reduction(longest_side: int, max_side: int, most: int | None = None) -> int:
    """The smallest power of two that brings ``longest_side`` to ``max_side`` or under, and at most ``most``."""
    factor = 1
    while longest_side > max_side * factor and (most is None or factor < most):
        factor *= 2
    return factor


class MediaRefused(Exception):
    """The bytes are refused as a stored file (an image or a video, ``storage/media.py``); ``str(exc)`` says why,
    in a clause for the client. ``app/refusals.py`` gives each its HTTP status and code."""

    def naming(self, filename: str) -> MediaRefused:
        """The same refusal, said of the file the client named ``filename``, as a sentence."""
        return type(self)(f"{filename}: {self}.")


class UnsupportedMedia(MediaRefused):
    """The bytes are neither an accepted image nor a video FFmpeg decodes."""


class MediaTooLarge(MediaRefused):
    """The header declares a frame (an image, or a video's) of more pixels than a worker should be asked to decode."""


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


def format_by_magic(head: bytes) -> str | None:
    """The accepted format the first :data:`HEADER_BYTES` announce, or None."""
    for name, (_, prefixes) in ACCEPTED_FORMATS.items():
        if any(head.startswith(prefix) for prefix in prefixes):
            if name == "WEBP" and head[8:12] != b"WEBP":
                continue
            return name
    return None


@contextmanager
def opened_header(stream: BinaryIO, formats: list[str] | None = None) -> Iterator[Image.Image]:
    """The image in ``stream``, opened without decoding a pixel. Pillow's decompression-bomb warning is
    silenced, since every caller applies its own pixel cap; past twice Pillow's limit it still raises
    ``Image.DecompressionBombError``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(stream, formats=formats) as image:
            yield image


def identify_image(stream: BinaryIO) -> ImageInfo:
    """Identify an image from a seekable stream; raise :class:`UnsupportedMedia` otherwise (:class:`MediaTooLarge`
    past :data:`MAX_PIXELS`)."""
    stream.seek(0)
    magic = format_by_magic(stream.read(HEADER_BYTES))
    if magic is None:
        raise UnsupportedMedia("the file is not a JPEG, PNG, WebP, BMP or TIFF image")
    stream.seek(0)
    try:
        with opened_header(stream, formats=[magic]) as image:  # checked below against MAX_PIXELS
            width, height = image.size
    except Image.DecompressionBombError as exc:
        raise MediaTooLarge(f"the image has too many pixels (the limit is {MAX_PIXELS:,})") from exc
    except Exception as exc:  # Pillow raises many types for a broken header
        raise UnsupportedMedia(f"the file starts like {magic} but its header cannot be read") from exc
    finally:
        stream.seek(0)
    if width <= 0 or height <= 0:
        raise UnsupportedMedia("the image has no pixels")
    if width * height > MAX_PIXELS:
        raise MediaTooLarge(f"the image has too many pixels ({width}x{height}; the limit is {MAX_PIXELS:,})")
    return ImageInfo(ACCEPTED_FORMATS[magic][0], width, height)

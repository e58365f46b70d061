"""Decode an image at the size it is shown at, never holding a large one whole in memory.

The API draws annotated images in its own processes, next to every other request,
so one render must cost tens of megabytes, not the 470 MB a 7000x7000 PNG once
took. An image whose longest side is over :data:`MAX_SIDE` is reduced by a power of
two ``f`` while it is decoded:

- JPEG: libjpeg decodes at 1/2, 1/4 or 1/8 scale (Pillow's ``draft``); a rest is
  reduced after.
- PNG, 8 bits per sample and not interlaced (nearly all of them): the compressed
  rows are inflated a band of about :data:`BAND_BYTES` at a time; each band is
  wrapped as a small PNG of its own for Pillow to unfilter (its first row preceded
  by the previous band's last one, which the filters refer to), reduced by ``f`` at
  once and pasted into the result.
- Anything else is decoded whole, and only up to :data:`MAX_FULL_DECODE_PIXELS`;
  a larger one raises :class:`TooLargeToDraw`.

The result is RGB, turned upright (EXIF orientation), with the scale from the
original's upright pixels to its own, so boxes stored in original pixels land where
they belong. The reduction factor and the turn upright are the rules the worker
decodes by too (:mod:`storage.images`); only the decoding is Pillow's here.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from storage.images import Turn, exif_orientation, reduction, turn_left, upright_size

# The longest side of an image drawn here; larger ones are reduced by 2, 4, 8… to fit.
MAX_SIDE = 3072
# Formats without a reduced decode are decoded whole only up to this many pixels (48 MB as RGB).
MAX_FULL_DECODE_PIXELS = 12_000_000
# Raw PNG rows inflated and unfiltered at a time.
BAND_BYTES = 4 * 1024 * 1024
READ_BYTES = 64 * 1024
# IHDR is 13 bytes, PLTE at most 768, tRNS at most 256.
MAX_HEADER_CHUNK = 1024

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> (Pillow mode, samples per pixel) for the 8-bit kinds decoded in bands.
PNG_BAND_MODES = {0: ("L", 1), 2: ("RGB", 3), 3: ("P", 1), 4: ("LA", 2), 6: ("RGBA", 4)}
REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F"}


class TooLargeToDraw(ValueError):
    """The image has no reduced decode and too many pixels to decode whole here."""


@dataclass(frozen=True)
class Reduced:
    """An image ready to draw on (RGB, upright), and what it stands for."""

    image: Image.Image
    format: str
    # Original (upright) pixels per pixel of ``image``, across and down.
    scale_x: float
    scale_y: float


def decode_reduced(path: Path, max_side: int = MAX_SIDE) -> Reduced:
    """Decode ``path`` to at most ``max_side`` (:data:`MAX_SIDE`, or a thumbnail's) on its longest side.

    Raises :class:`TooLargeToDraw`, or whatever Pillow raises for undecodable data.
    """
    with Image.open(path) as image:
        source_format = image.format or ""
        width, height = image.size
        orientation = exif_orientation(image)
        upright = upright_size(image, orientation)
        turn = turn_left(image, orientation)
        factor = reduction(max(width, height), max_side)
        if source_format == "JPEG" and factor > 1:
            drawn = _jpeg(image, factor, max_side)
        elif width * height <= MAX_FULL_DECODE_PIXELS:
            drawn = _whole(image, factor)
        elif source_format == "PNG":
            with open(path, "rb") as handle:
                drawn = png_in_bands(handle, factor)
        else:
            raise TooLargeToDraw(f"{width}x{height} {source_format}")
    drawn = turned_upright(drawn, turn)
    return Reduced(drawn, source_format, upright[0] / drawn.width, upright[1] / drawn.height)


def turned_upright(image: Image.Image, turn: Turn | None) -> Image.Image:
    """``image`` turned upright by ``turn`` (:func:`storage.images.turn_left`)."""
    if turn is None:
        return image
    if turn.transpose:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    if turn.mirror_left_right:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if turn.mirror_top_bottom:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image


def _shrink(image: Image.Image, factor: int) -> Image.Image:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # straight to RGB, Pillow warns about the transparency it drops
    elif image.mode not in REDUCIBLE_MODES:
        image = image.convert("RGB")
    return (image.reduce(factor) if factor > 1 else image).convert("RGB")


def _whole(image: Image.Image, factor: int) -> Image.Image:
    image.load()
    return _shrink(image, factor)


def _jpeg(image: Image.Image, factor: int, max_side: int) -> Image.Image:
    width, height = image.size
    image.draft("RGB", (width // factor, height // factor))  # libjpeg scales by at most 8
    image.load()
    return _shrink(image, reduction(max(image.size), max_side))


# --- PNG in bands -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _PngHeader:
    width: int
    height: int
    colour_type: int
    # PLTE and tRNS, verbatim, for every band.
    palette_chunks: bytes


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _read_chunks(handle: BinaryIO) -> tuple[_PngHeader, Iterator[bytes]]:
    """The header chunks up to the first IDAT, then the image data, read as it is needed."""
    if handle.read(8) != PNG_SIGNATURE:
        raise ValueError("not a PNG")
    header: tuple[int, ...] | None = None
    palette = b""
    while True:
        length, kind = struct.unpack(">I4s", handle.read(8))
        if kind == b"IDAT":
            break
        if kind == b"IEND":
            raise ValueError("a PNG without image data")
        if kind not in (b"IHDR", b"PLTE", b"tRNS"):
            handle.seek(length + 4, io.SEEK_CUR)  # text, colour profiles…: not needed to draw
            continue
        if length > MAX_HEADER_CHUNK:
            raise ValueError(f"a {kind.decode()} chunk of {length} bytes")
        data = handle.read(length)
        handle.seek(4, io.SEEK_CUR)  # CRC
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data)
        else:
            palette += _chunk(kind, data)
    if header is None:
        raise ValueError("a PNG without a header")
    width, height, depth, colour_type, _compression, _filter, interlace = header
    if depth != 8 or interlace or colour_type not in PNG_BAND_MODES:
        raise TooLargeToDraw(f"{width}x{height} PNG of {depth}-bit colour type {colour_type}, interlace {interlace}")

    def image_data(length: int) -> Iterator[bytes]:
        while True:
            while length:
                piece = handle.read(min(length, READ_BYTES))
                if not piece:
                    return
                length -= len(piece)
                yield piece
            handle.seek(4, io.SEEK_CUR)
            following = handle.read(8)
            if len(following) < 8:
                return
            length, kind = struct.unpack(">I4s", following)
            if kind != b"IDAT":
                return

    return _PngHeader(width, height, colour_type, palette), image_data(length)


def _decode_band(header: _PngHeader, filtered_rows: bytes, rows: int) -> Image.Image:
    ihdr = struct.pack(">IIBBBBB", header.width, rows, 8, header.colour_type, 0, 0, 0)
    band_png = b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", ihdr),
            header.palette_chunks,
            _chunk(b"IDAT", zlib.compress(filtered_rows, 0)),
            _chunk(b"IEND", b""),
        )
    )
    band = Image.open(io.BytesIO(band_png))
    band.load()
    if band.mode != PNG_BAND_MODES[header.colour_type][0] or band.size != (header.width, rows):
        raise ValueError("a band decoded to an unexpected mode or size")
    return band


def png_in_bands(handle: BinaryIO, factor: int, band_bytes: int = BAND_BYTES) -> Image.Image:
    """An 8-bit, non-interlaced PNG reduced by ``factor``, decoded a band of rows at a time (RGB)."""
    header, image_data = _read_chunks(handle)
    stride = 1 + header.width * PNG_BAND_MODES[header.colour_type][1]  # a filter byte, then the samples
    band_rows = factor * max(1, band_bytes // (stride * factor))
    result = Image.new("RGB", (math.ceil(header.width / factor), math.ceil(header.height / factor)))
    inflater = zlib.decompressobj()
    pending = bytearray()
    previous: bytes | None = None  # the last decoded row, unfiltered, as PNG stores samples
    done = 0

    def paste(rows: int) -> None:
        nonlocal previous, done
        filtered = bytes(pending[: rows * stride])
        del pending[: rows * stride]
        lead = b"" if previous is None else b"\0" + previous  # filter type 0: the samples as they are
        band = _decode_band(header, lead + filtered, rows + (previous is not None))
        previous = band.crop((0, band.height - 1, band.width, band.height)).tobytes()
        if lead:
            band = band.crop((0, 1, band.width, band.height))
        result.paste(_shrink(band, factor), (0, done // factor))
        done += rows

    def paste_ready() -> None:
        """Paste whole bands as their rows arrive, and the last, shorter one once it is complete."""
        while done < header.height:
            rows = min(band_rows, header.height - done)
            if len(pending) < rows * stride:
                return
            paste(rows)

    for piece in image_data:
        data = piece
        while data and done < header.height:
            pending += inflater.decompress(data, band_bytes)  # never more than a band at a time
            data = inflater.unconsumed_tail
            paste_ready()
        if done == header.height:
            return result
    pending += inflater.flush()
    paste_ready()
    if done < header.height:
        raise ValueError(f"the PNG's image data ends after {done} of {header.height} rows")
    return result

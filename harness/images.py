"""Small generated images: unique per seed, in any accepted format, or with a header that lies about its size.

Tests choose their images' seeds, and uploads of the same content are stored once and may reuse results: a test
that counts what a first upload costs, or needs a job to run, fails when another test of its process uploaded the
same bytes first. So every seed, of any size, makes its own image: the first pixels hold a digest of the seed.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

from PIL import Image


def image_bytes(width: int = 64, height: int = 48, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A small image in the given format, unique per seed (at least 11 pixels: a SHA-256 of the seed fills them)."""
    image = Image.new("RGB", (width, height), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    image.putpixel((seed % width, (seed // width) % height), (255, 255, 255))
    digest = hashlib.sha256(str(seed).encode()).digest()
    for index in range(0, len(digest), 3):
        image.putpixel(((index // 3) % width, (index // 3) // width), tuple(digest[index : index + 3].ljust(3, b"\0")))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (its data stays 8x8)."""
    data = bytearray(image_bytes(8, 8, seed=5))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)

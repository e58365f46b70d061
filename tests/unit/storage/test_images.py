"""The rules both decoders follow (storage/images.py): the API's Pillow decode and the worker's OpenCV one turn
an image upright and reduce it alike, checked against Pillow's own ``ImageOps.exif_transpose`` for every EXIF
orientation of every format that carries one, whole and reduced; and the reduction factor itself."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from app.reduced_decode import decode_reduced
from storage.images import ORIENTATION_TAG, reduction
from tasks.decoding import read_image

# Every block a colour of its own, 32 px wide, so that a reduction by up to 8 keeps each one uniform inside.
BLOCK = 32
SAVE_OPTIONS = {"PNG": {}, "TIFF": {}, "WEBP": {"lossless": True}, "JPEG": {"quality": 95}}


def stored(image_format: str, orientation: int) -> bytes:
    """An 8x4-block image (256x128), stored with EXIF ``orientation``."""
    image = Image.new("RGB", (8 * BLOCK, 4 * BLOCK))
    for column in range(8):
        for row in range(4):
            colour = (30 * column + 10, 60 * row + 20, 255 - 25 * column)
            image.paste(colour, (column * BLOCK, row * BLOCK, (column + 1) * BLOCK, (row + 1) * BLOCK))
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, exif=exif, **SAVE_OPTIONS[image_format])
    return buffer.getvalue()


def block_centres(image: np.ndarray, factor: int) -> np.ndarray:
    """The colour at the centre of every block (RGB), where neither reduction nor JPEG blurs it."""
    step = BLOCK // factor
    return image[step // 2 :: step, step // 2 :: step].astype(int)


@pytest.mark.parametrize("image_format", list(SAVE_OPTIONS))
@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("factor", [1, 4])
def test_both_decoders_turn_and_reduce_an_image_as_pillow_shows_it(
    image_format: str, orientation: int, factor: int, tmp_path: Path
) -> None:
    path = tmp_path / f"image.{image_format.lower()}"
    path.write_bytes(stored(image_format, orientation))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    expected = block_centres(upright, 1)
    upright_size = (upright.shape[1], upright.shape[0])

    drawn = decode_reduced(path, max_side=256 // factor)  # the API's
    assert (drawn.scale_x, drawn.scale_y) == (factor, factor)
    assert (drawn.image.width * factor, drawn.image.height * factor) == upright_size
    assert np.abs(block_centres(np.asarray(drawn.image), factor) - expected).max() <= 8

    decoded = read_image(path, size=64 // factor, max_pixels=10**6)  # the worker's, BGR
    assert decoded is not None and (decoded.width, decoded.height) == upright_size
    assert decoded.scale == (factor, factor)
    assert np.abs(block_centres(decoded.pixels[..., ::-1], factor) - expected).max() <= 8


@pytest.mark.parametrize(
    ("longest_side", "max_side", "most", "factor"),
    [
        (3072, 3072, None, 1),  # the API draws up to 3072 px as it is
        (3073, 3072, None, 2),
        (49_000, 3072, None, 16),
        (2560, 4 * 640, 8, 1),  # the worker decodes up to 4 times the inference size as it is
        (2561, 4 * 640, 8, 2),
        (100_000, 4 * 640, 8, 8),  # OpenCV reduces by 8 at most
    ],
)
def test_the_reduction_is_the_smallest_power_of_two_that_fits(
    longest_side: int, max_side: int, most: int | None, factor: int
) -> None:
    assert reduction(longest_side, max_side, most) == factor

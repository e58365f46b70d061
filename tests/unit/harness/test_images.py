"""The generated test images: a seed's image is its own at any size, so tests that need new content get it."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from harness.images import image_bytes


@pytest.mark.parametrize(("width", "height"), [(64, 48), (8, 8), (640, 480)])
def test_every_seed_makes_its_own_image(width: int, height: int) -> None:
    # 64 x 48 once repeated every 3,072 seeds (a colour and a pixel's place); 9,100 and 6,028 were one image.
    seeds = [0, 1, 3072, 6028, 9100, 2**127 + 5, 2**127 + 5 + 3072]
    assert len({image_bytes(width, height, seed=seed) for seed in seeds}) == len(seeds)
    assert image_bytes(width, height, seed=9100) == image_bytes(width, height, seed=9100)


def test_the_image_has_the_size_and_format_asked_for() -> None:
    with Image.open(io.BytesIO(image_bytes(33, 21, seed=4, fmt="JPEG"))) as image:
        assert (image.format, image.size) == ("JPEG", (33, 21))

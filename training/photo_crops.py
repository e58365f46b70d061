"""How often weights box crops of training's photographs: training's own check on photographs.

The evaluation's shape-free photos (``bus.jpg``, ``zidane.jpg``) are a test, and two
whole photos are a small one; choosing between rounds on them would be choosing on the
test. This draws crops of the photographs the training pools use (``MOSTLY_PHOTOS.photos``)
at a seed no stage draws, in equal numbers per photograph, writes them as a split with
no labels and counts the boxes weights put on them at a job's conf, by the same rule the
hard-example rounds mine with (``training/mining.py``). Every box is a false box.

    python -m training.photo_crops WEIGHTS [WEIGHTS ...] [--count N]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from config.ultralytics import configure_ultralytics_under
from inference.defaults import DEFAULT_CONF
from training import mining
from training.scenes import MAX_SIDE, MIN_SIDE, MOSTLY_PHOTOS, PhotoRef, _photo_background
from training.shapes import Shape, write_split

# Drawn by no stage of training/train.py (a unit test checks), so no crop is one a pool trained on.
CROP_SEED = 999


def photo_of(index: int) -> PhotoRef:
    """The photograph crop ``index`` is cut from: each in turn, so that they all get as many crops."""
    return MOSTLY_PHOTOS.photos[index % len(MOSTLY_PHOTOS.photos)]


def render_photo_crop(seed: int, index: int) -> tuple[Image.Image, list[Shape]]:
    """Crop ``index`` of its photograph, with nothing drawn on it and no label."""
    rng = np.random.default_rng([seed, index, 11])
    width, height = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    return Image.fromarray(_photo_background(rng, width, height, (photo_of(index),))), []


def boxes_per_photo(weights: Path, count: int, root: Path) -> Counter[str]:
    """The boxes ``weights`` put on ``count`` crops (written once under ``root``), by photograph file name."""
    images = root / "images" / "crops"
    if not images.is_dir():
        write_split(root, "crops", CROP_SEED, count, render_photo_crop)
    boxes: Counter[str] = Counter()
    for index, found in enumerate(mining.errors(weights, mining.split_images(images))):
        boxes[Path(photo_of(index)[1]).name] += found.stats.false_boxes
    return boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="+", type=Path)
    parser.add_argument(
        "--count", type=int, default=50 * len(MOSTLY_PHOTOS.photos), help="crops, spread over the photos"
    )
    args = parser.parse_args()
    configure_ultralytics_under()
    with tempfile.TemporaryDirectory() as folder:
        for weights in args.weights:
            boxes = boxes_per_photo(weights, args.count, Path(folder))
            print(f"{weights}: {boxes.total()} boxes on {args.count} crops of photographs at conf {DEFAULT_CONF}")
            print("  " + ", ".join(f"{name} {boxes[name]}" for name in sorted(boxes) if boxes[name]))


if __name__ == "__main__":
    main()

"""Procedural dataset of simple shapes in the Ultralytics YOLO layout.

Every image is a pure function of ``(seed, index)``: the same seed always gives
the same pixels and labels, whatever the number of images asked for.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
MIN_SIDE, MAX_SIDE = 240, 640
MAX_OBJECTS = 6
# How much of a labelled shape's box another shape (or, in training/scenes.py, an occluder) may cover.
MAX_COVERED_FRACTION = 0.25
OUTLINE_WIDTH = 2  # pixels, of the shapes drawn with an outline


@dataclass(frozen=True)
class Shape:
    """One drawn object: its class index and tight pixel box (x1, y1, x2, y2)."""

    cls: int
    box: tuple[float, float, float, float]

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.cls]


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A flat, gradient, striped or checkered background with noise."""
    base = rng.integers(0, 256, size=3).astype(np.float32)
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 1:
        other = rng.integers(0, 256, size=3).astype(np.float32)
        t = xx * math.cos(rng.uniform(0, math.pi)) + yy * math.sin(rng.uniform(0, math.pi))
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
        img = base * (1 - t[..., None]) + other * t[..., None]
    elif kind == 2:
        period = rng.uniform(8, 40)
        stripes = (np.sin((xx + yy * rng.uniform(-1, 1)) / period * 2 * math.pi) > 0)[..., None]
        img = np.where(stripes, base, np.clip(base + rng.uniform(-50, 50, size=3), 0, 255))
    elif kind == 3:
        cell = int(rng.integers(10, 48))
        checker = (((xx // cell) + (yy // cell)) % 2 == 0)[..., None]
        img = np.where(checker, base, np.clip(base + rng.uniform(-45, 45, size=3), 0, 255))
    else:
        img = np.broadcast_to(base, (height, width, 3)).copy()
    img = img + rng.normal(0, rng.uniform(0, 18), size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A random colour far enough from the local background to be visible."""
    mean = background.reshape(-1, 3).mean(axis=0)
    for _ in range(50):
        colour = rng.integers(0, 256, size=3)
        if np.linalg.norm(colour - mean) > 110:
            break
    return int(colour[0]), int(colour[1]), int(colour[2])


def _polygon(cls: int, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    corners = 4 if cls == 1 else 3
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / corners),
            cy + radius * math.sin(angle + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def _covered_fraction(box: tuple[float, ...], other: tuple[float, ...]) -> float:
    """How much of ``box`` lies under ``other``."""
    ix = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    iy = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    area = (box[2] - box[0]) * (box[3] - box[1])
    return ix * iy / area if area else 1.0


# Draws a whole shape's radius for a picture of this width and height; None when it cannot fit (draw again).
RadiusDraw = Callable[[np.random.Generator, int, int], float | None]


def place_shapes(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    pixels: np.ndarray,
    radius: RadiusDraw,
    outline_width: Callable[[np.random.Generator], int],
    placed: Sequence[Shape] = (),
) -> list[Shape]:
    """Draw up to ``MAX_OBJECTS`` whole shapes on the picture whose background is ``pixels``, each in a colour
    that stands out there, inside the picture and overlapping ``placed`` and each other only lightly (20 tries
    a shape); return ``placed`` and them."""
    height, width = pixels.shape[:2]
    shapes = list(placed)
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        for _attempt in range(20):
            cls = int(rng.integers(0, len(CLASS_NAMES)))
            size = radius(rng, width, height)
            if size is None:
                continue
            cx, cy = rng.uniform(size, width - size), rng.uniform(size, height - size)
            if cls == 0:
                points = None
                box = (cx - size, cy - size, cx + size, cy + size)
            else:
                points = _polygon(cls, cx, cy, size * (1.25 if cls == 2 else 1.15), rng.uniform(0, 2 * math.pi))
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                box = (min(xs), min(ys), max(xs), max(ys))
            if box[0] < 0 or box[1] < 0 or box[2] > width - 1 or box[3] > height - 1:
                continue
            if any(
                _covered_fraction(s.box, box) > MAX_COVERED_FRACTION or _covered_fraction(box, s.box) > 0.6
                for s in shapes
            ):
                continue
            x1, y1, x2, y2 = (round(v) for v in box)
            region = pixels[max(y1, 0) : y2 + 1, max(x1, 0) : x2 + 1]
            colour = _contrasting_colour(rng, region)
            outline = _contrasting_colour(rng, region) if rng.random() < 0.3 else None
            pen = outline_width(rng)
            if points is None:
                draw.ellipse(box, fill=colour, outline=outline, width=pen)
            else:
                draw.polygon(points, fill=colour, outline=outline, width=pen)
            shapes.append(Shape(cls, box))
            break
    return shapes


def _radius(rng: np.random.Generator, width: int, height: int) -> float:
    """A radius of 5–22 % of the picture's shorter side."""
    return rng.uniform(0.05, 0.22) * min(width, height)


def render_sample(seed: int, index: int) -> tuple[Image.Image, list[Shape]]:
    """Draw image ``index`` of the dataset ``seed``: the picture and its ground truth."""
    rng = np.random.default_rng([seed, index])
    width, height = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    pixels = _background(rng, width, height)
    image = Image.fromarray(pixels)
    shapes = place_shapes(ImageDraw.Draw(image), rng, pixels, _radius, lambda _rng: OUTLINE_WIDTH)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return image, shapes


def yolo_label_lines(shapes: list[Shape], width: int, height: int) -> list[str]:
    """Ultralytics' text label format: ``class cx cy w h``, normalised."""
    return [
        f"{s.cls} {(s.box[0] + s.box[2]) / 2 / width:.6f} {(s.box[1] + s.box[3]) / 2 / height:.6f} "
        f"{(s.box[2] - s.box[0]) / width:.6f} {(s.box[3] - s.box[1]) / height:.6f}"
        for s in shapes
    ]


Renderer = Callable[[int, int], tuple[Image.Image, list[Shape]]]


def write_split(root: Path, split: str, seed: int, count: int, render: Renderer) -> None:
    """Write ``count`` images and labels of dataset ``seed``, drawn by ``render``, under ``root``."""
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, shapes = render(seed, index)
        stem = f"{seed}_{index:05d}"
        image.save(images / f"{stem}.jpg", quality=int(np.random.default_rng([seed, index, 1]).integers(70, 96)))
        (labels / f"{stem}.txt").write_text("\n".join(yolo_label_lines(shapes, *image.size)) + "\n")


def write_dataset(root: Path, splits: dict[str, tuple[int, int]], render: Renderer = render_sample) -> Path:
    """Write each split (name → (seed, count)) drawn by ``render`` and the ``data.yaml`` that names them."""
    for split, (seed, count) in splits.items():
        write_split(root, split, seed, count, render)
    return write_data_yaml(root, list(splits))


def write_data_yaml(root: Path, splits: list[str]) -> Path:
    """The ``data.yaml`` naming the splits already under ``root`` (the first stands for any missing train/val)."""
    paths = {split: f"images/{split}" for split in splits}
    first = next(iter(paths.values()))
    paths = {"train": first, "val": first, **paths}  # Ultralytics requires both keys
    lines = [f"path: {root.resolve()}"] + [f"{split}: {path}" for split, path in paths.items()]
    lines += ["names:"] + [f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES)]
    data_yaml = root / "data.yaml"
    data_yaml.write_text("\n".join(lines) + "\n")
    return data_yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    print(write_dataset(args.root, {args.split: (args.seed, args.count)}))


if __name__ == "__main__":
    main()

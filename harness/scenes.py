"""Huge generated pictures of small shapes with their ground truth, and the recall of boxes against it.

The tiling path (issue 26) runs the model on tiles at native resolution because a 30-pixel shape in a
12,000-pixel picture vanishes when the whole picture is shrunk to the model's input. Its functional test and
``make bench`` need such a picture with every shape's box known, and a score for what came back; this module
draws both. It also holds the shape drawing that ``harness.videos`` animates, so both draw the bundled model's
classes the same way.

Shapes are drawn with OpenCV (anti-aliased, sub-pixel polygons), dark on a light background, as filled
circles, squares and triangles: the classes of ``models/shapes-yolov8n.pt``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from evaluation import matching

# The bundled model's classes, in its order: a box's class index is a position here.
CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
# A polygon's corner radius for a shape of radius 1, so that the three classes look about the same size
# (the proportions the bundled model was trained on, training/shapes.py).
CORNER_RADIUS = {1: 1.15, 2: 1.25}
JPEG_QUALITY = 90
# How far apart, in shape sizes, the centres of the large scene's grid cells are: shapes never touch.
CELL_SIZES = 2.5

Box = tuple[float, float, float, float]
# A class index and its box (x1, y1, x2, y2) in pixels: ground truth and found boxes alike.
LabelledBox = tuple[int, float, float, float, float]
Colour = tuple[int, int, int]


def shape_reach(cls: int, radius: float) -> float:
    """How far a shape of ``radius`` reaches from its centre: the radius of the circle around it."""
    return radius * CORNER_RADIUS.get(cls, 1.0)


def _corners(cls: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """The corners of a square (``cls`` 1) or a triangle (2), turned by ``angle``, as an (n, 2) array."""
    count = 4 if cls == 1 else 3
    steps = angle + np.arange(count) * 2 * math.pi / count
    reach = shape_reach(cls, radius)
    return np.stack([cx + reach * np.cos(steps), cy + reach * np.sin(steps)], axis=1)


def shape_box(cls: int, cx: float, cy: float, radius: float, angle: float) -> Box:
    """The tight box of the shape ``draw_shape`` draws with the same arguments."""
    if cls == 0:
        return cx - radius, cy - radius, cx + radius, cy + radius
    corners = _corners(cls, cx, cy, radius, angle)
    x1, y1 = corners.min(axis=0)
    x2, y2 = corners.max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


def draw_shape(
    canvas: np.ndarray, cls: int, centre: tuple[float, float], radius: float, angle: float, colour: Colour
) -> Box:
    """Fill the shape of class ``cls`` on ``canvas`` (BGR, in place) and return its box.

    Coordinates are sub-pixel (OpenCV's ``shift`` of 4 bits) so that a slowly moving shape moves smoothly.
    """
    cx, cy = centre
    fixed = 16  # 2 ** shift
    if cls == 0:
        point = (round(cx * fixed), round(cy * fixed))
        cv2.circle(canvas, point, round(radius * fixed), colour, -1, cv2.LINE_AA, shift=4)
    else:
        corners = np.round(_corners(cls, cx, cy, radius, angle) * fixed).astype(np.int32)
        cv2.fillPoly(canvas, [corners], colour, cv2.LINE_AA, shift=4)
    return shape_box(cls, cx, cy, radius, angle)


def shape_colour(rng: np.random.Generator) -> Colour:
    """A dark colour, each channel at most 120: it stands out on ``light_colour``'s backgrounds."""
    blue, green, red = (int(v) for v in rng.integers(0, 121, size=3))
    return blue, green, red


def light_colour(rng: np.random.Generator) -> Colour:
    """A light background colour, each channel at least 170."""
    blue, green, red = (int(v) for v in rng.integers(170, 241, size=3))
    return blue, green, red


def _cells(rng: np.random.Generator, width: int, height: int, cell: int, count: int) -> np.ndarray:
    """``count`` distinct cells of a grid of ``cell``-pixel squares over the picture, as (column, row) rows."""
    columns, rows = width // cell, height // cell
    if count > columns * rows:
        raise ValueError(f"{count} shapes of cell {cell} px do not fit {width}x{height}")
    chosen = rng.choice(columns * rows, size=count, replace=False)
    return np.stack([chosen % columns, chosen // columns], axis=1)


def write_large_scene(
    path: Path,
    width: int = 12000,
    height: int = 12000,
    shape_px: int = 30,
    count: int = 800,
    seed: int = 0,
    fmt: str = "JPEG",
) -> list[LabelledBox]:
    """Write a ``width`` x ``height`` picture with ``count`` shapes about ``shape_px`` pixels wide, none touching
    another, as ``fmt`` (JPEG at quality ``JPEG_QUALITY``, or PNG), and return their classes and boxes.

    Each shape sits in a grid cell of its own (cells ``CELL_SIZES`` shapes wide), at a random place inside
    it. The picture is one BGR array (3 bytes a pixel: 432 MB at 12,000 x 12,000) drawn in place and encoded
    by OpenCV, which writes it without another full copy.
    """
    rng = np.random.default_rng([seed, 26])
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = light_colour(rng)
    cell = math.ceil(shape_px * CELL_SIZES)
    radius = shape_px / 2
    margin = max(shape_reach(cls, radius) for cls in range(len(CLASS_NAMES))) + 1  # a shape stays in its cell
    truth: list[LabelledBox] = []
    for column, row in _cells(rng, width, height, cell, count):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        centre = (
            float(column * cell + rng.uniform(margin, cell - margin)),
            float(row * cell + rng.uniform(margin, cell - margin)),
        )
        box = draw_shape(canvas, cls, centre, radius, float(rng.uniform(0, 2 * math.pi)), shape_colour(rng))
        truth.append((cls, *box))
    _write_picture(path, canvas, fmt)
    return truth


def _write_picture(path: Path, canvas: np.ndarray, fmt: str) -> None:
    # OpenCV encodes from the BGR array itself; Pillow would first copy it into an image of its own.
    suffix = {"JPEG": ".jpg", "PNG": ".png"}[fmt.upper()]
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix == ".jpg" else []
    ok, encoded = cv2.imencode(suffix, canvas, params)
    if not ok:
        raise OSError(f"OpenCV could not encode a {canvas.shape[1]}x{canvas.shape[0]} {fmt}")
    path.write_bytes(encoded.tobytes())


def recall(found_boxes: Sequence[LabelledBox], truth: Sequence[LabelledBox], iou: float = 0.5) -> float:
    """The share of ``truth`` matched by ``found_boxes``: greedy one-to-one matching, same class, IoU ≥ ``iou``.

    The matching is the evaluation's own (``evaluation.matching.match``), so a score here means what the model's
    evaluation means; boxes come without confidences, so they are matched in the order given.
    """
    truths = [matching.Truth(str(cls), (x1, y1, x2, y2)) for cls, x1, y1, x2, y2 in truth]
    detections = [
        {"name": str(cls), "confidence": 1.0, "box": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}
        for cls, x1, y1, x2, y2 in found_boxes
    ]
    return matching.match(truths, detections, iou).found_rate

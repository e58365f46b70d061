"""Huge images detected in tiles, the SAHI way: overlapping slices at native resolution, merged back.

A model sees an image resized to its input size (640 px): in a 20,000 px aerial photograph a car shrinks below a
pixel. Cut into overlapping tiles of the model's size, the image is seen at its own resolution; each tile's boxes are
shifted back into the image's pixels (:func:`shift`) and the boxes of all tiles merged (:func:`merge`), since an
object on a tile border is found in pieces, or twice.

:func:`plan_tiles` decides the tiles when a job is submitted, in the API process: this module imports supervision
(which imports cv2) only in :func:`merge`, so planning keeps the API free of cv2 (the api-lean import contract).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# inference.yolo's Detection, not imported from there (it imports cv2, even for type checking: import-linter sees it).
Detection = dict[str, Any]
Tile = tuple[int, int, int, int]  # x1, y1, x2, y2 in the image's pixels

OFF, AUTO = "off", "auto"
# "auto" tiles an image whose longest side is over this many times the model's input size: beyond that a resized
# image loses objects of a few dozen pixels.
AUTO_TILING_FACTOR = 4
MAX_TILES_PER_SIDE = 99
_BOX_KEYS = ("x1", "y1", "x2", "y2")


def tile_boxes(width: int, height: int, tile: int, overlap: float) -> list[Tile]:
    """Square tiles of side ``tile`` overlapping by ``overlap`` (a fraction of the side), row by row.

    The step is ``round(tile * (1 - overlap))``; the last row and column are aligned to the image's edges, so every
    tile is whole where the image is larger than a tile, and clipped to the image where it is not.
    """
    step = tile_step(tile, overlap)
    columns, rows = tile_starts(width, tile, step), tile_starts(height, tile, step)
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in rows for x in columns]


def tile_step(tile: int, overlap: float) -> int:
    if tile < 1 or not 0 <= overlap < 1:
        raise ValueError(f"tiles need a side of at least 1 px and an overlap in [0, 1): {tile}, {overlap}")
    return max(1, round(tile * (1 - overlap)))


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Where the tiles along one side start: every ``step``, and the last one flush with the edge."""
    last = max(0, length - tile)
    return [*range(0, last, step), last]


def plan_tiles(width: int, height: int, imgsz: int, tiles: str, overlap: float) -> list[Tile]:
    """The tiles a job's ``tiles`` setting cuts an image into; [] when the image runs whole.

    ``"off"``: whole. ``"auto"``: tiles of the model's size ``imgsz`` when the longest side is over
    :data:`AUTO_TILING_FACTOR` times it. ``"N"`` (1 to 99): N tiles along the longest side (1: whole), of the
    smallest side that N cover it with.
    """
    side = tile_side(max(width, height), imgsz, tiles, overlap)
    return [] if side is None else tile_boxes(width, height, side, overlap)


def tile_side(longest: int, imgsz: int, tiles: str, overlap: float) -> int | None:
    """The side of the tiles for ``tiles``, or None when the image is not tiled."""
    if tiles == OFF:
        return None
    if tiles == AUTO:
        return imgsz if longest > AUTO_TILING_FACTOR * imgsz else None
    count = tiles_per_side(tiles)
    if count == 1:
        return None
    # N tiles overlapping by `overlap` cover N - (N - 1) * overlap tile sides; rounding the step down can make the
    # grid one tile longer, so grow the side until it has N. Where tiles are a few dozen pixels, no whole side may
    # give exactly N: the grid then has fewer.
    side = math.ceil(longest / (count - (count - 1) * overlap))
    while len(tile_starts(longest, side, tile_step(side, overlap))) > count:
        side += 1
    return side


def tiles_per_side(tiles: str) -> int:
    if not tiles.isdigit() or not 1 <= int(tiles) <= MAX_TILES_PER_SIDE:
        raise ValueError(f"tiles is {OFF!r}, {AUTO!r} or a count from 1 to {MAX_TILES_PER_SIDE}, not {tiles!r}")
    return int(tiles)


def shift(detections: list[Detection], x: int, y: int) -> list[Detection]:
    """A tile's detections in the pixels of the image whose tile starts at (``x``, ``y``)."""
    offsets = {"x1": x, "y1": y, "x2": x, "y2": y}
    return [{**d, "box": {key: d["box"][key] + offsets[key] for key in _BOX_KEYS}} for d in detections]


def merge(detections: list[Detection], iou: float) -> list[Detection]:
    """One box per object from the boxes of overlapping tiles, best first.

    supervision's non-maximum merge, as SAHI's postprocess: by class, boxes overlapping the best remaining box by
    ``iou`` or more, measured over the smaller box (IoS), become one box: their union, with the best one's name,
    class and confidence (the group's highest). IoS, because a box cut by a tile's edge lies inside the whole box the
    neighbouring tile found: its IoU with it is small, its IoS 1. Merge rather than suppress, because a cut box may
    score higher than the whole one, and an object larger than the overlap is found only in pieces: the union is the
    whole object where suppression would keep one piece.
    """
    if not detections:
        return []
    import supervision as sv  # here, not at the top: see the module docstring (cv2 stays out of the API)

    predictions = np.array([[*box_of(d), d["confidence"], d["class"]] for d in detections], dtype=np.float64)
    groups = sv.box_non_max_merge(predictions, iou_threshold=iou, overlap_metric=sv.OverlapMetric.IOS)
    merged = [merged_group([detections[i] for i in group]) for group in groups]
    return sorted(merged, key=lambda d: d["confidence"], reverse=True)


def box_of(detection: Detection) -> list[float]:
    return [detection["box"][key] for key in _BOX_KEYS]


def merged_group(group: list[Detection]) -> Detection:
    """The union of a group's boxes, labelled as its most confident box."""
    boxes = np.array([box_of(d) for d in group])
    x1, y1 = boxes[:, :2].min(axis=0).tolist()
    x2, y2 = boxes[:, 2:].max(axis=0).tolist()
    best = max(group, key=lambda d: d["confidence"])
    return {**best, "box": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}

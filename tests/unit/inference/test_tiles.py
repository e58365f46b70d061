"""Tiling a huge image and merging the tiles' boxes back (SAHI's method)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from inference.tiles import AUTO_TILING_FACTOR, Tile, merge, plan_tiles, shift, tile_boxes
from inference.yolo import Detection

OVERLAP = 0.2
SIDE = 640  # step 512: tiles start at 0, 512, 1024, ... along each side
MERGE_THRESHOLD = 0.5  # SAHI's default match threshold, the one jobs.parts merges with


def coverage(width: int, height: int, tiles: list[Tile]) -> np.ndarray:
    covered = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in tiles:
        covered[y1:y2, x1:x2] = True
    return covered


def starts(tiles: list[Tile]) -> tuple[list[int], list[int]]:
    return sorted({t[0] for t in tiles}), sorted({t[1] for t in tiles})


def test_the_grid_covers_the_image_with_the_overlap_row_by_row() -> None:
    tiles = tile_boxes(2000, 1300, SIDE, OVERLAP)

    assert starts(tiles) == ([0, 512, 1024, 1360], [0, 512, 660])
    assert tiles == sorted(tiles, key=lambda t: (t[1], t[0]))
    assert coverage(2000, 1300, tiles).all()
    assert all(x2 - x1 == SIDE and y2 - y1 == SIDE for x1, y1, x2, y2 in tiles)


def test_the_last_row_and_column_are_flush_with_the_edges() -> None:
    tiles = tile_boxes(1536, 1100, SIDE, OVERLAP)

    columns, rows = starts(tiles)
    assert columns == [0, 512, 896]  # 1024 would overrun 1536: the last column starts at 1536 - 640
    assert rows == [0, 460]
    assert max(t[2] for t in tiles) == 1536 and max(t[3] for t in tiles) == 1100


def test_a_side_shorter_than_a_tile_clips_the_tiles() -> None:
    assert tile_boxes(300, 200, SIDE, OVERLAP) == [(0, 0, 300, 200)]
    assert tile_boxes(1200, 300, SIDE, OVERLAP) == [(0, 0, 640, 300), (512, 0, 1152, 300), (560, 0, 1200, 300)]


@pytest.mark.parametrize("overlap", [-0.1, 1.0])
def test_an_overlap_outside_0_to_1_is_refused(overlap: float) -> None:
    with pytest.raises(ValueError, match="overlap"):
        tile_boxes(2000, 2000, SIDE, overlap)


def test_off_and_one_tile_run_the_image_whole() -> None:
    assert plan_tiles(20_000, 15_000, SIDE, "off", OVERLAP) == []
    assert plan_tiles(20_000, 15_000, SIDE, "1", OVERLAP) == []


def test_auto_tiles_only_past_four_times_the_model_size() -> None:
    limit = AUTO_TILING_FACTOR * SIDE

    assert plan_tiles(limit, 1000, SIDE, "auto", OVERLAP) == []
    tiles = plan_tiles(1000, limit + 1, SIDE, "auto", OVERLAP)
    assert tiles == tile_boxes(1000, limit + 1, SIDE, OVERLAP)
    assert {y2 - y1 for _, y1, _, y2 in tiles} == {SIDE}


@pytest.mark.parametrize(
    ("width", "height", "count"), [(4000, 3000, 2), (4000, 3000, 5), (1000, 7777, 12), (999, 999, 3)]
)
def test_n_tiles_along_the_longest_side(width: int, height: int, count: int) -> None:
    tiles = plan_tiles(width, height, SIDE, str(count), OVERLAP)

    columns, rows = starts(tiles)
    along_longest = columns if width >= height else rows
    assert len(along_longest) == count
    assert coverage(width, height, tiles).all()
    side = tiles[0][2] - tiles[0][0]
    assert np.diff(along_longest).max() <= round(side * (1 - OVERLAP))  # neighbours overlap at least as stated


@pytest.mark.parametrize("tiles", ["0", "100", "x", ""])
def test_a_tiles_setting_out_of_range_is_refused(tiles: str) -> None:
    with pytest.raises(ValueError, match="tiles"):
        plan_tiles(4000, 3000, SIDE, tiles, OVERLAP)


def test_planning_imports_no_cv2() -> None:
    """The API plans tiles when a job is submitted: it must not pull cv2 (through supervision or inference.yolo)."""
    code = "import sys, inference.tiles as t; t.plan_tiles(9000, 9000, 640, 'auto', 0.2); print('cv2' in sys.modules)"

    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def detection(x1: float, y1: float, x2: float, y2: float, confidence: float, label: int = 0) -> Detection:
    return {"name": f"class{label}", "class": label, "confidence": confidence, "box": box(x1, y1, x2, y2)}


def box(x1: float, y1: float, x2: float, y2: float) -> dict[str, float]:
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}


def test_shift_moves_a_tiles_boxes_into_the_image() -> None:
    found = [detection(1, 2, 30, 40, 0.8, label=3)]

    shifted = shift(found, 512, 1024)

    assert shifted == [{"name": "class3", "class": 3, "confidence": 0.8, "box": box(513, 1026, 542, 1064)}]
    assert found[0]["box"] == box(1, 2, 30, 40)


def detect(tile: Tile, objects: list[tuple[int, int, int, int]], confidence: float) -> list[Detection]:
    """A stand-in detector: the part of each object inside ``tile``, in the tile's pixels, scoring ``confidence``
    when whole and less the less of it shows."""
    x1, y1, x2, y2 = tile
    found = []
    for ox1, oy1, ox2, oy2 in objects:
        left, top, right, bottom = max(ox1, x1), max(oy1, y1), min(ox2, x2), min(oy2, y2)
        if left < right and top < bottom:
            shown = (right - left) * (bottom - top) / ((ox2 - ox1) * (oy2 - oy1))
            found.append(detection(left - x1, top - y1, right - x1, bottom - y1, confidence * (1 + shown) / 2))
    return found


def tiled(width: int, height: int, objects: list[tuple[int, int, int, int]], confidence: float) -> list[Detection]:
    """What the tiles of a ``width`` x ``height`` image find of ``objects``, in the image's pixels."""
    tiles = tile_boxes(width, height, SIDE, OVERLAP)
    return [d for tile in tiles for d in shift(detect(tile, objects, confidence), tile[0], tile[1])]


def test_an_object_cut_by_two_borders_merges_into_its_whole_box() -> None:
    # Inside the tile at 512-1152, across the right edge of the one at 0-640 and the left edge of the one at 1024.
    found = tiled(2000, 640, [(600, 100, 1050, 300)], 0.8)
    assert [d["box"]["x2"] - d["box"]["x1"] for d in found] == [40, 450, 26]

    assert merge(found, MERGE_THRESHOLD) == [detection(600, 100, 1050, 300, 0.8)]


def test_a_cut_box_scoring_higher_still_gives_the_whole_box() -> None:
    """Why merge rather than suppress: suppression would keep the 40 px sliver and drop the whole object."""
    sliver, whole = detection(600, 100, 640, 300, 0.9), detection(601, 102, 760, 299, 0.7)

    assert merge([whole, sliver], MERGE_THRESHOLD) == [detection(600, 100, 760, 300, 0.9)]


def test_an_object_wider_than_the_overlap_merges_from_its_pieces() -> None:
    found = tiled(2000, 640, [(400, 100, 900, 300)], 0.8)
    assert len(found) == 2  # no tile holds it whole

    assert [d["box"] for d in merge(found, MERGE_THRESHOLD)] == [box(400, 100, 900, 300)]


def test_nearby_objects_stay_apart() -> None:
    objects = [(560, 100, 620, 200), (625, 100, 700, 200)]  # 5 px apart, both near the border at 640
    found = tiled(2000, 640, objects, 0.8)
    assert len(found) == 4

    assert sorted(tuple(d["box"].values()) for d in merge(found, MERGE_THRESHOLD)) == objects


def test_overlapping_objects_of_different_classes_are_kept() -> None:
    person, bicycle = detection(100, 100, 160, 260, 0.9, label=0), detection(95, 180, 170, 270, 0.8, label=1)
    duplicate_person = detection(101, 100, 160, 259, 0.6, label=0)

    merged = merge([bicycle, duplicate_person, person], MERGE_THRESHOLD)

    assert [(d["name"], d["confidence"]) for d in merged] == [("class0", 0.9), ("class1", 0.8)]
    assert merged[0]["box"] == box(100, 100, 160, 260)


def test_nothing_to_merge() -> None:
    assert merge([], MERGE_THRESHOLD) == []


def test_scattered_objects_come_back_whole_from_a_tiled_image() -> None:
    """Objects up to the overlap's size anywhere on a tiled 3000 x 2000 image: each one comes back as itself."""
    objects = scattered_objects(3000, 2000, np.random.default_rng(3))
    found = tiled(3000, 2000, objects, 0.9)
    assert len(found) > len(objects)  # objects on borders are found in several tiles, whole or cut

    merged = merge(found, MERGE_THRESHOLD)

    assert sorted(tuple(d["box"].values()) for d in merged) == sorted(objects)


def scattered_objects(width: int, height: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """One object of 20 to 119 px at a random place in each 250 px cell: none touch."""
    objects = []
    for x in range(0, width, 250):
        for y in range(0, height, 250):
            left, top = x + int(rng.integers(0, 120)), y + int(rng.integers(0, 120))
            objects.append((left, top, left + int(rng.integers(20, 120)), top + int(rng.integers(20, 120))))
    return objects

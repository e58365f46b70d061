"""The large scene: its shapes are where the truth says, apart, and recall() scores boxes against it."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import pytest

from harness.scenes import CLASS_NAMES, recall, write_large_scene

WIDTH, HEIGHT, COUNT = 1600, 1200, 150


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, float, float, float, float]]]:
    path = tmp_path_factory.mktemp("scenes") / "scene.jpg"
    return path, write_large_scene(path, WIDTH, HEIGHT, count=COUNT, seed=4)


def test_truth_lists_every_shape_inside_the_picture_and_apart(scene: tuple[Path, list]) -> None:
    _path, truth = scene
    assert len(truth) == COUNT
    assert {cls for cls, *_box in truth} == set(range(len(CLASS_NAMES)))
    for _cls, x1, y1, x2, y2 in truth:
        assert 0 <= x1 < x2 <= WIDTH and 0 <= y1 < y2 <= HEIGHT
        assert 24 <= max(x2 - x1, y2 - y1) <= 36  # shapes about 30 px across, whatever their turn
    for a, b in itertools.combinations(truth, 2):
        assert a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]  # boxes never overlap


def test_shapes_are_drawn_where_the_truth_says(scene: tuple[Path, list]) -> None:
    path, truth = scene
    pixels = cv2.imread(str(path))
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    assert all(pixels[round((y1 + y2) / 2), round((x1 + x2) / 2)].max() < 140 for _c, x1, y1, x2, y2 in truth)
    assert pixels[:, :3].min() > 140  # a strip at the left edge: always background, cells keep a margin


def test_a_seed_gives_the_same_scene_and_another_seed_another(tmp_path: Path, scene: tuple[Path, list]) -> None:
    path, truth = scene
    again = tmp_path / "again.jpg"
    assert write_large_scene(again, WIDTH, HEIGHT, count=COUNT, seed=4) == truth
    assert again.read_bytes() == path.read_bytes()
    other = tmp_path / "other.png"
    assert write_large_scene(other, WIDTH, HEIGHT, count=COUNT, seed=5, fmt="PNG") != truth
    assert other.read_bytes().startswith(b"\x89PNG") and cv2.imread(str(other)).shape == (HEIGHT, WIDTH, 3)


def test_too_many_shapes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        write_large_scene(tmp_path / "full.jpg", 300, 300, count=100)


def test_recall_matches_one_to_one_by_class_and_iou(scene: tuple[Path, list]) -> None:
    _path, truth = scene
    assert recall(truth, truth) == 1.0
    assert recall(truth[1:], truth) == pytest.approx((COUNT - 1) / COUNT)
    assert recall(truth[:1] * COUNT, truth) == pytest.approx(1 / COUNT)  # one box matches one shape only
    other_class = [((cls + 1) % len(CLASS_NAMES), *box) for cls, *box in truth]
    assert recall(other_class, truth) == 0.0
    shifted = [(cls, x1 + 12, y1, x2 + 12, y2) for cls, x1, y1, x2, y2 in truth]  # IoU about 0.43 for 30 px
    assert recall(shifted, truth) == 0.0 and recall(shifted, truth, iou=0.3) == 1.0
    assert recall([], []) == 1.0

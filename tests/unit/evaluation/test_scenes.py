"""The independent evaluation generator: deterministic, whole and border-cut shapes labelled, apart from training."""

from __future__ import annotations

import ast

import cv2
import numpy as np

from config.paths import PROJECT_ROOT
from evaluation.matching import MatchStats, match
from evaluation.scenes import CLASSES, NEGATIVE_FRACTION, Truth, render

SAMPLES = 40


def test_an_image_is_a_pure_function_of_seed_and_index() -> None:
    assert render(9, 3) == render(9, 3)
    assert render(9, 3)[0] != render(9, 4)[0]


def test_objects_are_whole_shapes_inside_a_decodable_jpeg_and_border_cut_ones_are_clipped() -> None:
    counts, cut = [], 0
    for index in range(SAMPLES):
        data, width, height, truths = render(0, index)
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert pixels.shape[:2] == (height, width)
        whole = [t for t in truths if min(t.box[:2]) > 0 and t.box[2] < width - 1 and t.box[3] < height - 1]
        counts.append(len(whole))
        for truth in truths:
            x1, y1, x2, y2 = truth.box
            assert truth.name in CLASSES
            assert 0 <= x1 <= x2 <= width - 1 and 0 <= y1 <= y2 <= height - 1
        # Shapes with their centre beyond the border show less than half of themselves: ignore regions.
        assert all(truth.ignore for truth in truths if truth not in whole)
        assert not any(truth.ignore for truth in whole)
        cut += len(truths) - len(whole)
    assert NEGATIVE_FRACTION / 3 <= counts.count(0) / SAMPLES <= NEGATIVE_FRACTION * 3
    assert sum(counts) >= SAMPLES * 2 and cut >= 5


def test_the_evaluation_shares_no_code_with_training() -> None:
    for path in (PROJECT_ROOT / "evaluation").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "training", path
            elif isinstance(node, ast.Import):
                assert all(alias.name.split(".")[0] != "training" for alias in node.names), path


def test_matching_counts_found_objects_and_false_boxes() -> None:
    truths = [Truth("circle", (10, 10, 50, 50)), Truth("square", (100, 100, 140, 140))]

    def box(name: str, x1: float, y1: float, x2: float, y2: float, confidence: float = 0.9) -> dict:
        return {"name": name, "confidence": confidence, "box": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}

    detections = [
        box("circle", 11, 11, 51, 51),  # found
        box("circle", 12, 12, 50, 50, 0.5),  # duplicate: false
        box("triangle", 100, 100, 140, 140),  # wrong class: false, the square is missed
        box("square", 300, 300, 340, 340),  # nowhere near: false
    ]
    stats = match(truths, detections)
    assert (stats.objects, stats.detections, stats.matched) == (2, 4, 1)
    assert stats.found_rate == 0.5 and stats.false_per_object == 1.5
    empty = MatchStats()
    empty.add(match([], [box("circle", 0, 0, 9, 9)]))
    assert empty.found_rate == 1.0 and empty.false_boxes == 1


def test_a_box_on_an_ignore_region_is_neither_a_hit_nor_false_and_the_region_is_never_required() -> None:
    truths = [Truth("circle", (10, 10, 50, 50)), Truth("square", (0, 100, 30, 160), ignore=True)]

    def box(name: str, x1: float, y1: float, x2: float, y2: float) -> dict:
        return {"name": name, "confidence": 0.9, "box": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}

    on_region = match(truths, [box("circle", 10, 10, 50, 50), box("triangle", 0, 102, 29, 158)])
    assert (on_region.objects, on_region.matched, on_region.ignored, on_region.false_boxes) == (1, 1, 1, 0)
    assert on_region.found_rate == 1.0  # the region was never required
    beside = match(truths, [box("square", 0, 100, 30, 120), box("circle", 200, 200, 240, 240)])
    assert (beside.matched, beside.ignored, beside.false_boxes) == (0, 0, 2)  # IoU below 0.5: still false

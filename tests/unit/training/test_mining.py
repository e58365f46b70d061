"""Hard-example mining: errors are counted as the evaluation counts them, and the chosen images become a split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from config.paths import BUNDLED_MODEL
from training import mining
from training.shapes import render_sample, write_dataset, write_split

CIRCLE, SQUARE = 0, 1
BOX = [10.0, 10.0, 50.0, 50.0]


def errors_of(truth: list[tuple[int, list[float]]], predicted: list[tuple[int, list[float], float]]) -> tuple[int, int]:
    classes = np.array([c for c, _ in truth], dtype=int)
    boxes = np.array([b for _, b in truth], dtype=np.float32).reshape(-1, 4)
    labels = np.array([c for c, _, _ in predicted], dtype=int)
    predicted_boxes = np.array([b for _, b, _ in predicted], dtype=np.float32).reshape(-1, 4)
    scores = np.array([s for _, _, s in predicted], dtype=np.float32)
    return mining.count_errors(classes, boxes, predicted_boxes, scores, labels)


def test_a_right_box_is_no_error_and_a_shifted_one_is_both_a_false_box_and_a_miss() -> None:
    assert errors_of([(CIRCLE, BOX)], [(CIRCLE, [12.0, 11.0, 51.0, 49.0], 0.9)]) == (0, 0)
    assert errors_of([(CIRCLE, BOX)], [(CIRCLE, [40.0, 40.0, 80.0, 80.0], 0.9)]) == (1, 1)


def test_a_box_of_the_wrong_class_misses_the_shape_and_a_second_box_on_it_is_false() -> None:
    assert errors_of([(CIRCLE, BOX)], [(SQUARE, BOX, 0.9)]) == (1, 1)
    assert errors_of([(CIRCLE, BOX)], [(SQUARE, BOX, 0.4), (CIRCLE, BOX, 0.8)]) == (1, 0)
    assert errors_of([(CIRCLE, BOX)], [(CIRCLE, BOX, 0.4), (CIRCLE, BOX, 0.8)]) == (1, 0)


def test_nothing_predicted_misses_every_shape_and_boxes_on_an_empty_image_are_all_false() -> None:
    assert errors_of([(CIRCLE, BOX), (SQUARE, [60.0, 60.0, 90.0, 90.0])], []) == (0, 2)
    assert errors_of([], [(CIRCLE, BOX, 0.3)]) == (1, 0)
    assert errors_of([], []) == (0, 0)


def test_labels_read_back_as_the_drawn_boxes(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"val": (0, 4)}, render_sample)
    for image in mining.split_images(tmp_path / "images" / "val"):
        index = int(image.stem.split("_")[1])
        picture, shapes = render_sample(0, index)
        classes, boxes = mining.labelled_boxes(mining.label_file_of(image), *picture.size)
        assert classes.tolist() == [shape.cls for shape in shapes]
        assert np.allclose(boxes, [shape.box for shape in shapes], atol=0.01)


def test_chosen_images_become_a_split_of_hard_links(tmp_path: Path) -> None:
    write_split(tmp_path, "pool", 7, 3, render_sample)
    chosen = mining.split_images(tmp_path / "images" / "pool")[1:]
    mining.link_split(chosen, tmp_path, "train")
    linked = mining.split_images(tmp_path / "images" / "train")
    assert [path.name for path in linked] == [path.name for path in chosen]
    assert all(path.samefile(source) for path, source in zip(linked, chosen, strict=True))
    assert mining.label_file_of(linked[0]).read_text() == mining.label_file_of(chosen[0]).read_text()


@pytest.mark.slow
def test_the_bundled_model_gets_clean_shapes_right_and_unlabelled_shapes_are_its_false_boxes(tmp_path: Path) -> None:
    write_split(tmp_path, "val", 3, 10, render_sample)  # the clean generator's held-out seed
    images = mining.split_images(tmp_path / "images" / "val")
    found = mining.errors(BUNDLED_MODEL, images)
    objects = sum(e.objects for e in found)
    assert objects >= 20
    assert sum(e.false_boxes + e.misses for e in found) <= objects / 10, found
    mining.label_file_of(images[0]).write_text("\n")  # as if its shapes were not there
    (first, *_rest) = mining.errors(BUNDLED_MODEL, images)  # the same list: Ultralytics letterboxes it alike
    boxes = found[0].objects - found[0].misses + found[0].false_boxes  # every box it drew there before
    assert first.objects == 0 and first.misses == 0 and first.false_boxes == boxes > 0

"""Hard-example mining: errors are counted as the evaluation counts them, and the chosen images become a split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from config.paths import BUNDLED_MODEL
from training import mining
from training.shapes import CLASS_NAMES, render_sample, write_dataset, write_split

NAMES = dict(enumerate(CLASS_NAMES))  # as the model names its classes


def test_labels_read_back_as_the_drawn_boxes(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"val": (0, 4)}, render_sample)
    for image in mining.split_images(tmp_path / "images" / "val"):
        index = int(image.stem.split("_")[1])
        picture, shapes = render_sample(0, index)
        labels = mining.labels(mining.label_file_of(image), *picture.size, NAMES)
        assert [label.name for label in labels] == [NAMES[shape.cls] for shape in shapes]
        assert np.allclose([label.box for label in labels], [shape.box for shape in shapes], atol=0.01)
        assert not any(label.ignore for label in labels)


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
    objects = sum(e.stats.objects for e in found)
    assert objects >= 20
    assert sum(e.stats.false_boxes + e.stats.misses for e in found) <= objects / 10, found
    mining.label_file_of(images[0]).write_text("\n")  # as if its shapes were not there
    (first, *_rest) = mining.errors(BUNDLED_MODEL, images)  # the same list: Ultralytics letterboxes it alike
    boxes = found[0].stats.detections  # every box it drew there before
    assert first.stats.objects == 0 and first.stats.misses == 0 and first.stats.false_boxes == boxes > 0

"""The fine-tuning generator: deterministic, labels inside the picture, negatives, photos from the wheel."""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from config.paths import PROJECT_ROOT
from training import scenes
from training.scenes import MIN_VISIBLE_FRACTION, NEGATIVE_FRACTION, PHOTOS, _visible_part, render_scene, render_scene2
from training.shapes import write_dataset

SAMPLES = 40


def test_a_scene_is_a_pure_function_of_seed_and_index() -> None:
    first, first_shapes = render_scene(5, 7)
    again, again_shapes = render_scene(5, 7)
    other, _ = render_scene(5, 8)
    assert np.array_equal(np.asarray(first), np.asarray(again)) and first_shapes == again_shapes
    assert not np.array_equal(np.asarray(first.resize(other.size)), np.asarray(other))


def test_labels_are_whole_shapes_inside_the_picture_and_some_scenes_have_none() -> None:
    counts = []
    for index in range(SAMPLES):
        image, shapes = render_scene(0, index)
        counts.append(len(shapes))
        for shape in shapes:
            x1, y1, x2, y2 = shape.box
            assert 0 <= x1 < x2 <= image.width - 1 and 0 <= y1 < y2 <= image.height - 1
            assert min(x2 - x1, y2 - y1) >= 12
    negatives = counts.count(0) / SAMPLES
    assert NEGATIVE_FRACTION / 2 <= negatives <= NEGATIVE_FRACTION * 2
    assert sum(counts) >= SAMPLES * 2


def test_scenes2_labels_mostly_visible_border_cut_shapes_with_their_clipped_box() -> None:
    touching = 0
    for index in range(SAMPLES):
        image, shapes = render_scene2(0, index)
        for shape in shapes:
            x1, y1, x2, y2 = shape.box
            assert 0 <= x1 < x2 <= image.width - 1 and 0 <= y1 < y2 <= image.height - 1
            touching += x1 == 0 or y1 == 0 or x2 == image.width - 1 or y2 == image.height - 1
    assert touching >= 2


def test_the_visible_part_of_a_shape_cut_by_the_border() -> None:
    half, box = _visible_part(None, (0.0, 50.0, 20.0), 100, 100)  # a circle centred on the left border
    assert abs(half - 0.5) < 0.05 and box is not None and box[0] == 0 and abs(box[2] - 20) <= 1
    assert _visible_part(None, (-30.0, 50.0, 20.0), 100, 100) == (0.0, None)
    inside, _ = _visible_part([(10, 10), (40, 10), (40, 40), (10, 40)], (25.0, 25.0, 22.0), 100, 100)
    assert inside == 1.0 > MIN_VISIBLE_FRACTION


@pytest.mark.parametrize("name", PHOTOS)
def test_photo_backgrounds_ship_in_the_scikit_image_wheel(name: str) -> None:
    assert resources.files("skimage").joinpath("data", name).is_file()


def test_the_evaluation_photos_are_never_training_backgrounds() -> None:
    assert not {"bus.jpg", "zidane.jpg"} & set(PHOTOS)
    assert "ultralytics" not in Path(scenes.__file__).read_text()


def test_training_never_imports_the_evaluation() -> None:
    for path in (PROJECT_ROOT / "training").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.split(".")[0] == "evaluation" for name in names), path


def test_write_dataset_writes_yolo_labels_of_the_scenes(tmp_path: Path) -> None:
    data_yaml = write_dataset(tmp_path, {"train": (0, 4)}, render_scene)
    labels = sorted((tmp_path / "labels" / "train").glob("*.txt"))
    assert len(labels) == 4 and "names:" in data_yaml.read_text()
    for label, index in zip(labels, range(4), strict=True):
        _, shapes = render_scene(0, index)
        assert len([line for line in label.read_text().splitlines() if line]) == len(shapes)

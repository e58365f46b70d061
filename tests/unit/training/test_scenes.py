"""The fine-tuning generator: deterministic, labels inside the picture, negatives, photos from the wheel."""

from __future__ import annotations

import ast
import dataclasses
import io
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from config.paths import PROJECT_ROOT
from training import scenes
from training.scenes import (
    CLEAN_EVERY,
    EVALUATION_CASES,
    FONT_GLYPHS,
    FONTS,
    GRACE_HOPPER,
    INPUT_SIDE,
    MIN_VISIBLE_FRACTION,
    MOSTLY_PHOTOS,
    NEGATIVE_FRACTION,
    OUTLINES_AND_SPECKS,
    PHOTOS,
    SceneStyle,
    _visible_part,
    render_evaluation_cases,
    render_hollow,
    render_mixed,
    render_photos,
    render_scene,
)
from training.shapes import Renderer, render_sample, write_dataset

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


def test_evaluation_cases_label_mostly_visible_border_cut_shapes_with_their_clipped_box() -> None:
    touching = 0
    for index in range(SAMPLES):
        image, shapes = render_evaluation_cases(0, index)
        for shape in shapes:
            x1, y1, x2, y2 = shape.box
            assert 0 <= x1 < x2 <= image.width - 1 and 0 <= y1 < y2 <= image.height - 1
            touching += x1 == 0 or y1 == 0 or x2 == image.width - 1 or y2 == image.height - 1
    assert touching >= 2


def test_hollow_outlines_leave_the_shape_unfilled() -> None:
    """The pen covers well under the hull of what it drew (a filled shape covers all of it; a stroke
    cut by the border can too, hence the percentiles)."""
    covered = []
    for seed in range(100):
        canvas = Image.new("RGB", (320, 240))
        scenes._hollow(ImageDraw.Draw(canvas), np.random.default_rng(seed), *canvas.size)
        rows, cols = np.nonzero(np.asarray(canvas).any(axis=2))
        if rows.size > 20:
            hull = cv2.convexHull(np.stack([cols, rows], axis=1).astype(np.int32))
            covered.append(rows.size / cv2.contourArea(hull))
    assert len(covered) > 90 and np.median(covered) < 0.5 and np.percentile(covered, 90) < 0.75


def test_specks_are_smaller_than_the_smallest_labelled_shape_at_the_input() -> None:
    canvas = Image.new("RGB", (800, 600))
    draw, rng = ImageDraw.Draw(canvas), np.random.default_rng(0)
    for _ in range(20):
        scenes._specks(draw, rng, *canvas.size)
    count, _labels, stats, _centres = cv2.connectedComponentsWithStats(np.asarray(canvas).any(axis=2).astype(np.uint8))
    scale = max(canvas.size) / INPUT_SIDE
    areas = stats[1:, cv2.CC_STAT_AREA]
    assert count > 100 and np.median(areas) <= np.pi * (2.5 * scale) ** 2 < np.pi * (3.5 * scale) ** 2


@pytest.mark.parametrize(
    ("render", "style"),
    [(render_mixed, FONT_GLYPHS), (render_hollow, OUTLINES_AND_SPECKS), (render_photos, MOSTLY_PHOTOS)],
)
def test_a_hard_stage_pool_mixes_clean_images_into_scenes_of_its_style(render: Renderer, style: SceneStyle) -> None:
    for index in (0, 1, CLEAN_EVERY, CLEAN_EVERY + 1):
        image, shapes = render(4, index)
        if index % CLEAN_EVERY == 0:
            expected, expected_shapes = render_sample(4, index)
        else:
            expected, expected_shapes = render_scene(4, index, style)
        assert np.array_equal(np.asarray(image), np.asarray(expected)) and shapes == expected_shapes


def test_each_pool_style_adds_to_the_one_before() -> None:
    assert FONT_GLYPHS.font_glyphs and not EVALUATION_CASES.font_glyphs
    assert OUTLINES_AND_SPECKS.hollow and not FONT_GLYPHS.hollow
    assert GRACE_HOPPER in MOSTLY_PHOTOS.photos and GRACE_HOPPER not in OUTLINES_AND_SPECKS.photos
    assert 0 < MOSTLY_PHOTOS.bare_photo_fraction < 1 and OUTLINES_AND_SPECKS.bare_photo_fraction == 0


def test_a_bare_photograph_carries_no_label() -> None:
    bare = dataclasses.replace(MOSTLY_PHOTOS, photo_fraction=1.0, bare_photo_fraction=1.0)
    drawn = dataclasses.replace(MOSTLY_PHOTOS, photo_fraction=1.0, bare_photo_fraction=0.0)
    assert not any(render_scene(8, index, bare)[1] for index in range(12))
    assert sum(bool(render_scene(8, index, drawn)[1]) for index in range(12)) >= 6


def test_glyphs_draw_text_as_large_as_the_shapes() -> None:
    drawn = []
    for seed in range(30):
        canvas = Image.new("RGB", (320, 240))
        scenes._glyphs(ImageDraw.Draw(canvas), np.random.default_rng(seed), *canvas.size)
        rows, cols = np.nonzero(np.asarray(canvas).any(axis=2))
        drawn.append(rows.size and max(np.ptp(rows), np.ptp(cols)))
    assert sum(1 for extent in drawn if extent >= 16) >= 20, drawn


def test_the_visible_part_of_a_shape_cut_by_the_border() -> None:
    half, box = _visible_part(None, (0.0, 50.0, 20.0), 100, 100)  # a circle centred on the left border
    assert abs(half - 0.5) < 0.05 and box is not None and box[0] == 0 and abs(box[2] - 20) <= 1
    assert _visible_part(None, (-30.0, 50.0, 20.0), 100, 100) == (0.0, None)
    inside, _ = _visible_part([(10, 10), (40, 10), (40, 40), (10, 40)], (25.0, 25.0, 22.0), 100, 100)
    assert inside == 1.0 > MIN_VISIBLE_FRACTION


@pytest.mark.parametrize("ref", (*PHOTOS, GRACE_HOPPER))
def test_photographs_ship_in_the_wheels(ref: scenes.PhotoRef) -> None:
    package, path = ref
    assert resources.files(package).joinpath(path).is_file()


@pytest.mark.parametrize("name", FONTS)
def test_fonts_ship_in_the_matplotlib_wheel(name: str) -> None:
    font = ImageFont.truetype(io.BytesIO(scenes._font_bytes(name)), 40)
    assert font.getbbox("O")[2] > 10


def test_the_evaluation_photos_and_fonts_are_never_in_training_scenes() -> None:
    assert not {"bus.jpg", "zidane.jpg"} & {Path(path).name for _, path in MOSTLY_PHOTOS.photos}
    source = Path(scenes.__file__).read_text()
    assert "ultralytics" not in source
    assert "cv2" not in source  # the evaluation writes its text in OpenCV's Hershey fonts


def test_training_imports_of_the_evaluation_only_its_scoring_rule() -> None:
    for path in (PROJECT_ROOT / "training").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            evaluation = [name for name in names if name.split(".")[0] == "evaluation"]
            assert evaluation in ([], ["evaluation.matching"]), path  # never its generator (evaluation.scenes)


def test_write_dataset_writes_yolo_labels_of_the_scenes(tmp_path: Path) -> None:
    data_yaml = write_dataset(tmp_path, {"train": (0, 4)}, render_scene)
    labels = sorted((tmp_path / "labels" / "train").glob("*.txt"))
    assert len(labels) == 4 and "names:" in data_yaml.read_text()
    for label, index in zip(labels, range(4), strict=True):
        _, shapes = render_scene(0, index)
        assert len([line for line in label.read_text().splitlines() if line]) == len(shapes)

"""Training's check on photographs: crops of every pool photograph, unseen by any stage, and every box counted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from config.paths import BUNDLED_MODEL
from training import photo_crops
from training.photo_crops import CROP_SEED, boxes_per_photo, photo_of, render_photo_crop
from training.scenes import MOSTLY_PHOTOS
from training.shapes import render_sample
from training.train import STAGES


def test_crops_are_unlabelled_deterministic_and_go_round_the_photographs() -> None:
    first, shapes = render_photo_crop(CROP_SEED, 3)
    again, _ = render_photo_crop(CROP_SEED, 3)
    assert shapes == [] and np.array_equal(np.asarray(first), np.asarray(again))
    following, _ = render_photo_crop(CROP_SEED, 3 + len(MOSTLY_PHOTOS.photos))  # the same photograph, another crop
    assert not np.array_equal(np.asarray(first), np.asarray(following.resize(first.size)))
    assert {photo_of(index) for index in range(len(MOSTLY_PHOTOS.photos))} == set(MOSTLY_PHOTOS.photos)


def test_no_stage_draws_the_crop_seed() -> None:
    assert all(CROP_SEED not in stage.seeds for stage in STAGES.values())


@pytest.mark.slow
def test_each_box_counts_against_the_photograph_of_its_crop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Clean shapes in place of the crops: the bundled model boxes nearly every one, and each box must be counted
    # against the photograph whose turn that index is.
    monkeypatch.setattr(photo_crops, "render_photo_crop", lambda _seed, index: (render_sample(3, index)[0], []))
    count = 2 * len(MOSTLY_PHOTOS.photos)
    boxes = boxes_per_photo(BUNDLED_MODEL, count, tmp_path)
    drawn: Counter[str] = Counter()
    for index in range(count):
        drawn[Path(photo_of(index)[1]).name] += len(render_sample(3, index)[1])
    assert drawn.total() >= 40
    assert sum(abs(boxes[name] - drawn[name]) for name in drawn) <= drawn.total() / 10, (boxes, drawn)

"""Hard examples: what given weights get wrong on a split, at the confidence a job runs at.

The bundled model's remaining fault is false boxes at conf 0.25 on clutter. A
fine-tuning stage that draws a large pool from its generator and trains on the images
where the previous weights put a false box, with as many others, spends its epochs on
that rather than on what the model already gets right. The same count of false boxes
and missed shapes, made on a validation split, picks the stage's epoch: the one with
the fewest errors at the operating point, which Ultralytics' fitness (mostly
mAP50-95) does not weigh.

Boxes are matched to labels by the evaluation's own rule (``evaluation/matching.py``:
greedy, most confident box first, one box per shape, same class and IoU ≥ 0.5), the one
module of ``evaluation/`` that training imports: the scoring rule, never the independent
generator or its images. Only the training generator's own splits are read here. Images
go to Ultralytics as lists of ``BATCH`` paths, as in the run that made the shipped
weights; a list can come out a box or two apart from the same images predicted one by
one, as a job predicts them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from more_itertools import chunked

from evaluation.matching import MatchStats, Truth, match
from inference.defaults import DEFAULT_CONF

BATCH = 32  # images predicted per call; bounds the memory a large pool takes


@dataclass(frozen=True)
class Errors:
    """What a model got wrong on one image: its objects, false boxes and misses."""

    image: Path
    stats: MatchStats


def labels(label_file: Path, width: int, height: int, names: dict[int, str]) -> list[Truth]:
    """A YOLO label file's shapes, named by ``names`` (the model's classes), with pixel boxes (x1, y1, x2, y2);
    YOLO labels have no ignore regions."""
    from ultralytics.utils.ops import xywhn2xyxy

    rows = np.loadtxt(label_file, ndmin=2) if label_file.stat().st_size > 1 else np.zeros((0, 5))
    boxes = xywhn2xyxy(rows[:, 1:], width, height)
    return [Truth(names[int(row[0])], tuple(map(float, box))) for row, box in zip(rows, boxes, strict=True)]


def split_images(images: Path) -> list[Path]:
    return sorted(images.glob("*.jpg"))


def label_file_of(image: Path) -> Path:
    """Ultralytics' rule: the label of ``…/images/<split>/x.jpg`` is ``…/labels/<split>/x.txt``."""
    return image.parents[2] / "labels" / image.parent.name / f"{image.stem}.txt"


def errors(weights: Path, images: Iterable[Path], imgsz: int | None = None) -> list[Errors]:
    """Each image's errors under ``weights`` at a job's default conf on the CPU, at input size ``imgsz`` (None: the
    weights' own, as a job runs them by default)."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    options = {"conf": DEFAULT_CONF, "device": "cpu", "verbose": False, **({"imgsz": imgsz} if imgsz else {})}
    found = []
    for batch in chunked(images, BATCH):
        for image, result in zip(batch, model.predict([str(p) for p in batch], **options), strict=True):
            height, width = result.orig_shape
            found.append(
                Errors(image, match(labels(label_file_of(image), width, height, result.names), result.summary()))
            )
    return found


def link_split(images: list[Path], root: Path, split: str) -> None:
    """Make ``split`` under ``root`` out of ``images`` of another split (hard links, labels alongside)."""
    for folder in ("images", "labels"):
        (root / folder / split).mkdir(parents=True, exist_ok=True)
    for image in images:
        for source, target in (
            (image, root / "images" / split / image.name),
            (label_file_of(image), root / "labels" / split / f"{image.stem}.txt"),
        ):
            target.unlink(missing_ok=True)
            os.link(source, target)

"""Hard examples: what given weights get wrong on a split, at the confidence a job runs at.

The bundled model's remaining fault is false boxes at conf 0.25 on clutter. A
fine-tuning stage that draws a large pool from its generator and trains on the images
where the previous weights put a false box, with as many others, spends its epochs on
that rather than on what the model already gets right. The same count of false boxes
and missed shapes, made on a validation split, picks the stage's epoch: the one with
the fewest errors at the operating point, which Ultralytics' fitness (mostly
mAP50-95) does not weigh.

Matching is greedy, most confident box first, one box per shape: same class and
IoU ≥ 0.5. Only the training generator's own splits are read here; the independent
evaluation (``evaluation/``) never is. Images go to Ultralytics as lists of ``BATCH``
paths, as in the run that made the shipped weights; a list can come out a box or two
apart from the same images predicted one by one, as a job predicts them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from more_itertools import chunked

from jobs.lifecycle import JobParams

CONF = JobParams.conf  # the confidence a job runs at by default
IOU_MATCH = 0.5
BATCH = 32  # images predicted per call; bounds the memory a large pool takes


@dataclass(frozen=True)
class Errors:
    """What a model got wrong on one image."""

    image: Path
    objects: int
    false_boxes: int
    misses: int


def labelled_boxes(label_file: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A YOLO label file's classes and pixel boxes (x1, y1, x2, y2)."""
    from ultralytics.utils.ops import xywhn2xyxy

    rows = np.loadtxt(label_file, ndmin=2) if label_file.stat().st_size > 1 else np.zeros((0, 5))
    return rows[:, 0].astype(int), xywhn2xyxy(rows[:, 1:], width, height)


def count_errors(
    classes: np.ndarray, boxes: np.ndarray, predicted: np.ndarray, scores: np.ndarray, labels: np.ndarray
) -> tuple[int, int]:
    """False boxes and misses of one image's predictions (``labels``, ``predicted``) against its truth."""
    import torch
    from ultralytics.utils.metrics import box_iou

    if not len(boxes) or not len(predicted):
        return len(predicted), len(boxes)
    overlaps = box_iou(torch.as_tensor(predicted), torch.as_tensor(boxes)).numpy()
    free = np.ones(len(boxes), dtype=bool)
    matched = 0
    for index in np.argsort(-scores, kind="stable"):
        candidates = np.where(free & (classes == labels[index]), overlaps[index], 0.0)
        best = int(candidates.argmax())
        if candidates[best] >= IOU_MATCH:
            free[best] = False
            matched += 1
    return len(predicted) - matched, len(boxes) - matched


def split_images(images: Path) -> list[Path]:
    return sorted(images.glob("*.jpg"))


def label_file_of(image: Path) -> Path:
    """Ultralytics' rule: the label of ``…/images/<split>/x.jpg`` is ``…/labels/<split>/x.txt``."""
    return image.parents[2] / "labels" / image.parent.name / f"{image.stem}.txt"


def errors(weights: Path, images: Iterable[Path], imgsz: int | None = None) -> list[Errors]:
    """Each image's errors under ``weights`` at conf ``CONF`` on the CPU, at input size ``imgsz`` (None: the
    weights' own, as a job runs them by default)."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    options = {"conf": CONF, "device": "cpu", "verbose": False, **({"imgsz": imgsz} if imgsz else {})}
    found = []
    for batch in chunked(images, BATCH):
        for image, result in zip(batch, model.predict([str(p) for p in batch], **options), strict=True):
            height, width = result.orig_shape
            classes, boxes = labelled_boxes(label_file_of(image), width, height)
            predicted = result.boxes
            false_boxes, misses = count_errors(
                classes, boxes, predicted.xyxy.numpy(), predicted.conf.numpy(), predicted.cls.numpy().astype(int)
            )
            found.append(Errors(image, len(classes), false_boxes, misses))
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

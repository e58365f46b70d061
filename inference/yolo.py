"""Ultralytics' detection pre- and post-processing, in numpy, for runtimes we call directly.

The same steps as Ultralytics' ``DetectionPredictor``, so a direct backend's
detections agree with ``YOLO.predict`` on the same weights: letterbox (resize
keeping the aspect ratio, pad with grey 114 to the inference size, or only to the
stride when every image of the batch has the same shape), RGB scaled to 0–1,
then per image: best class per anchor over ``conf``, class-aware greedy NMS over
``iou`` (at most 300 kept), boxes mapped back to the image's pixels and clipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

PAD_VALUE = 114
MAX_DETECTIONS = 300
MAX_NMS_CANDIDATES = 30_000
# Boxes of different classes are shifted this far apart so one NMS pass never lets them suppress each other.
CLASS_OFFSET = 7680

Detection = dict[str, Any]


@dataclass(frozen=True)
class Letterboxed:
    """A batch ready for the network, and how each image was placed in it."""

    batch: np.ndarray  # float32, (n, 3, height, width), RGB in 0..1
    shapes: list[tuple[int, int]]  # each original (height, width)


def inference_shape(size: int, stride: int) -> int:
    """``size`` rounded up to the model's stride, as Ultralytics' ``check_imgsz`` does."""
    return max(stride, -(-size // stride) * stride)


def letterbox(images: Sequence[np.ndarray], size: int, stride: int, rect: bool = True) -> Letterboxed:
    """BGR images to one network input of ``size`` (a multiple of ``stride``).

    With ``rect`` (a model with dynamic input) and every image of the same shape, the
    minimum rectangle: padded only to the stride, as Ultralytics does.
    """
    rect = rect and len({image.shape for image in images}) == 1
    placed = []
    for image in images:
        height, width = image.shape[:2]
        ratio = min(size / height, size / width)
        new_width, new_height = max(round(width * ratio), 1), max(round(height * ratio), 1)
        pad_x, pad_y = size - new_width, size - new_height
        if rect:
            pad_x, pad_y = pad_x % stride, pad_y % stride
        if (new_width, new_height) != (width, height):
            image = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
        top, left = round(pad_y / 2 - 0.1), round(pad_x / 2 - 0.1)
        bottom, right = round(pad_y / 2 + 0.1), round(pad_x / 2 + 0.1)
        placed.append(cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3))
    batch = np.stack(placed)[..., ::-1].transpose(0, 3, 1, 2)  # BGR HWC to RGB CHW
    return Letterboxed(np.ascontiguousarray(batch, dtype=np.float32) / 255.0, [i.shape[:2] for i in images])


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept, best first: torchvision's ``nms``, dropping boxes over ``iou`` with a kept one."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        overlap = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        order = rest[overlap / (areas[best] + areas[rest] - overlap) <= iou]
    return np.asarray(keep, dtype=np.int64)


def detections(
    output: np.ndarray,
    input_shape: tuple[int, int],
    shape: tuple[int, int],
    names: dict[int, str],
    conf: float,
    iou: float,
) -> list[Detection]:
    """One image's raw output ``(4 + classes, anchors)`` as Ultralytics' ``summary()`` rows, in the image's pixels."""
    scores_by_class = output[4:]
    classes = scores_by_class.argmax(0)
    scores = scores_by_class[classes, np.arange(classes.size)]
    candidates = np.flatnonzero(scores > conf)
    if candidates.size > MAX_NMS_CANDIDATES:
        candidates = candidates[np.argsort(-scores[candidates], kind="stable")[:MAX_NMS_CANDIDATES]]
    cx, cy, w, h = output[:4, candidates]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    classes, scores = classes[candidates], scores[candidates]
    kept = greedy_nms(boxes + (classes * CLASS_OFFSET)[:, None], scores, iou)[:MAX_DETECTIONS]
    boxes = to_original(boxes[kept], input_shape, shape)
    return [
        {
            "name": names[int(label)],
            "class": int(label),
            "confidence": float(score),
            "box": {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2)},
        }
        for (x1, y1, x2, y2), label, score in zip(boxes.tolist(), classes[kept], scores[kept], strict=True)
    ]


def to_original(boxes: np.ndarray, input_shape: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Boxes on the letterboxed input back in the original image's pixels, clipped to it (``ops.scale_boxes``)."""
    height, width = shape
    gain = min(input_shape[0] / height, input_shape[1] / width)
    new_height, new_width = max(round(height * gain), 1), max(round(width * gain), 1)
    pad_x, pad_y = round((input_shape[1] - new_width) / 2 - 0.1), round((input_shape[0] - new_height) / 2 - 0.1)
    scaled = (boxes - [pad_x, pad_y, pad_x, pad_y]) / np.array([new_width / width, new_height / height] * 2)
    return np.clip(scaled, 0, [width, height, width, height])

"""Run one YOLO model over a batch of stored images and shape the results.

Each file is decoded on its own, so one that cannot be decoded gets an error
in its result while the rest of the batch is predicted together.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.jobs import FileResult, JobParams, WorkItem

if TYPE_CHECKING:
    import numpy as np
    from ultralytics import YOLO

DECODE_ERROR = "the file could not be decoded as an image"


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file to a BGR array; ``None`` if it is not decodable (OSError if unreadable)."""
    import cv2
    import numpy as np

    data = np.fromfile(path, dtype=np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None


def predict_batch(
    model: YOLO, device: str, root: Path, items: Sequence[WorkItem], params: JobParams
) -> list[FileResult]:
    """Predict every decodable image of ``items`` in one call; undecodable ones get an error result."""
    results: dict[int, FileResult] = {}
    images: list[np.ndarray] = []
    positions: list[int] = []
    for position, item in enumerate(items):
        image = read_image(root / item.path)
        if image is None:
            results[position] = FileResult(item.upload_id, None, None, [], DECODE_ERROR)
        else:
            images.append(image)
            positions.append(position)
    if images:
        options: dict[str, Any] = {"conf": params.conf, "iou": params.iou, "device": device, "verbose": False}
        if params.imgsz:
            options["imgsz"] = params.imgsz
        for position, prediction in zip(positions, model.predict(images, **options), strict=True):
            height, width = prediction.orig_shape
            detections = prediction.summary(decimals=3)
            results[position] = FileResult(items[position].upload_id, int(width), int(height), detections)
    return [results[position] for position in range(len(items))]

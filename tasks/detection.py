"""Run one YOLO model over a batch of stored images and shape the results.

Each file is decoded on its own, so one that cannot be decoded gets an error
in its result while the rest of the batch is predicted together.

Memory. A prefork child holds the decoded images of one batch at a time, and a
child killed for memory turns its job into a message that kills the next child
too. So before any pixel is decoded, the file's header (Pillow, no pixels) says
how large it is:

- over the pixel cap (``WORKER_MAX_IMAGE_PIXELS``) the file gets an error result
  and is never decoded;
- at least 4 times the inference size on its longest side, it is decoded reduced by
  2, 4 or 8 (OpenCV's ``IMREAD_REDUCED_COLOR_*``), keeping at least twice the
  inference size: libjpeg decodes a JPEG at that scale; other formats are decoded
  whole and shrunk inside OpenCV, so one full-size image at most is held at a time
  (and only once: a full ``IMREAD_COLOR`` decode of a PNG peaks at twice its size).
  YOLO shrinks every image to the inference size anyway.

Stored widths, heights and detections are always in the original (upright)
image's pixels: boxes found on a reduced image are scaled back up.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from jobs.catalog import inference_size
from jobs.lifecycle import FileResult, JobParams, WorkItem

if TYPE_CHECKING:
    import numpy as np

    from inference.backends import Detector

DECODE_ERROR = "the file could not be decoded as an image"
MISSING_ERROR = "the file is no longer on the storage volume"
REDUCTIONS = (8, 4, 2)
RESULT_DECIMALS = 3


class TooManyPixels(ValueError):
    """The header declares more pixels than a worker decodes."""


@dataclass(frozen=True)
class Decoded:
    """An image as predicted on, and the upright size of the original it stands for."""

    pixels: np.ndarray
    width: int
    height: int

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per decoded pixel, across and down."""
        rows, columns = self.pixels.shape[:2]
        return self.width / columns, self.height / rows


def inference_size_on(detector: Detector, params: JobParams) -> int:
    """The longest side YOLO resizes the job's images to on ``detector``: the domain's rule
    (:func:`jobs.catalog.inference_size`) applied to the trained size and stride the detector reports."""
    return inference_size(params.imgsz, detector.imgsz, detector.stride)


def header_size(path: Path) -> tuple[int, int] | None:
    """Width and height from the file's header; ``None`` when no header can be read.

    Raises OSError when the file cannot be opened (FileNotFoundError when it is gone), and
    :class:`TooManyPixels` past Pillow's own hard limit.
    """
    with open(path, "rb") as handle:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller applies its own cap
                with Image.open(handle) as image:
                    return image.size
        except Image.DecompressionBombError as exc:  # twice Pillow's limit: over any cap
            raise TooManyPixels(f"the image has too many pixels ({exc})") from None
        except Exception:  # Pillow raises many types for a broken header
            return None


def reduction(longest_side: int, size: int) -> int:
    """The largest of 8, 4 and 2 that keeps the longest side at least twice ``size``; else 1."""
    return next((factor for factor in REDUCTIONS if longest_side // factor >= 2 * size), 1)


def read_image(path: Path, size: int, max_pixels: int) -> Decoded | None:
    """Decode an image file to BGR, reduced when far larger than ``size``; ``None`` if it is not decodable.

    Raises :class:`TooManyPixels` over ``max_pixels`` (nothing decoded), and OSError if
    the file is unreadable (FileNotFoundError when it is gone).
    """
    import cv2
    import numpy as np

    header = header_size(path)
    if header is None:
        return None
    width, height = header
    if width * height > max_pixels:
        raise TooManyPixels(f"the image has too many pixels ({width}x{height}; the worker's limit is {max_pixels:,})")
    factor = reduction(max(width, height), size)
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}.get(
        factor, cv2.IMREAD_REDUCED_COLOR_8
    )
    data = np.fromfile(path, dtype=np.uint8)
    pixels = cv2.imdecode(data, flag) if data.size else None
    del data
    if pixels is None:
        return None
    rows, columns = pixels.shape[:2]
    if factor == 1:
        return Decoded(pixels, columns, rows)
    # OpenCV turned the image upright (EXIF orientation): the original's upright size has the same shape.
    if abs(columns * width - rows * height) < abs(columns * height - rows * width):
        width, height = height, width
    return Decoded(pixels, width, height)


def scaled(detections: list[dict[str, Any]], sx: float, sy: float) -> list[dict[str, Any]]:
    """Detections as stored: in the original's pixels (boxes, segments and keypoints), rounded.

    ``sx`` and ``sy`` are the original's pixels per decoded pixel (1 unless decoded reduced).
    """

    def across(value: float) -> float:
        return round(value * sx, RESULT_DECIMALS)

    def down(value: float) -> float:
        return round(value * sy, RESULT_DECIMALS)

    out = []
    for detection in detections:
        detection = dict(detection)
        if "confidence" in detection:
            detection["confidence"] = round(detection["confidence"], RESULT_DECIMALS)
        box = detection.get("box") or {}
        detection["box"] = {k: across(v) if k.startswith("x") else down(v) for k, v in box.items()}
        for key in ("segments", "keypoints"):
            if key in detection:
                points = dict(detection[key])
                points["x"] = [across(v) for v in points.get("x", [])]
                points["y"] = [down(v) for v in points.get("y", [])]
                detection[key] = points
        out.append(detection)
    return out


def predict_batch(detector: Detector, root: Path, items: Sequence[WorkItem], params: JobParams) -> list[FileResult]:
    """Predict every decodable image of ``items`` in one call; the others get an error result."""
    from tasks import settings

    max_pixels = settings.worker.max_image_pixels
    size = inference_size_on(detector, params)
    results: dict[int, FileResult] = {}
    decoded: list[Decoded] = []
    positions: list[int] = []
    for position, item in enumerate(items):
        try:
            image = read_image(root / item.path, size, max_pixels)
        except FileNotFoundError:
            results[position] = FileResult(item.upload_id, None, None, [], MISSING_ERROR)
            continue
        except TooManyPixels as exc:
            results[position] = FileResult(item.upload_id, None, None, [], str(exc))
            continue
        if image is None:
            results[position] = FileResult(item.upload_id, None, None, [], DECODE_ERROR)
        else:
            decoded.append(image)
            positions.append(position)
    predictions = detector.predict([image.pixels for image in decoded], params)
    for position, image, detections in zip(positions, decoded, predictions, strict=True):
        shaped = scaled(detections, *image.scale)
        results[position] = FileResult(items[position].upload_id, image.width, image.height, shaped)
    return [results[position] for position in range(len(items))]

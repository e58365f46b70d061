"""Stored images to pixels for the pipeline's decode stage (:mod:`tasks.pipeline`), and detections back to stored form.

Each file is decoded on its own, so one that cannot be decoded gets an error
result (:func:`decode_item`) while the rest of its batch is predicted together.

Memory. A prefork child holds the decoded images of one batch at a time, and a
child killed for memory turns its job into a message that kills the next child
too. So before any pixel is decoded, the file's header (Pillow, no pixels) says
how large it is:

- over the pixel cap (``WORKER_MAX_IMAGE_PIXELS``) the file gets an error result
  and is never decoded;
- over 4 times the inference size on its longest side, it is decoded reduced by
  2, 4 or 8 (OpenCV's ``IMREAD_REDUCED_COLOR_*``) to at most 4 times, keeping more than
  twice the inference size: libjpeg decodes a JPEG at that scale; other formats are
  decoded whole and shrunk inside OpenCV, so one full-size image at most is held at a
  time (and only once: a full ``IMREAD_COLOR`` decode of a PNG peaks at twice its size).
  YOLO shrinks every image to the inference size anyway.

OpenCV turns the image upright (EXIF orientation) as it decodes it. Stored widths,
heights and detections are always in the original upright image's pixels, its size
as the header gives it (:func:`storage.images.upright_size`): boxes found on a
reduced image are scaled back up. The API draws them on its own decode, reduced and
turned by the same rules (:mod:`storage.images`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from jobs.catalog import inference_size
from jobs.lifecycle import FileResult, JobParams, WorkItem
from storage.images import exif_orientation, opened_header, reduction, upright_size

if TYPE_CHECKING:
    import numpy as np

    from inference.backends import Detector

DECODE_ERROR = "the file could not be decoded as an image"
MISSING_ERROR = "the file is no longer on the storage volume"
# OpenCV decodes reduced by 2, 4 or 8, to at most this many times the inference size on the longest side.
MAX_REDUCTION = 8
DECODED_SIDE_PER_INFERENCE_SIZE = 4
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


@dataclass(frozen=True)
class Header:
    """What the file's header says: the image's format, and its size shown upright."""

    format: str
    width: int
    height: int


def read_header(path: Path) -> Header | None:
    """The file's header, read without decoding a pixel; ``None`` when no header can be read.

    Raises OSError when the file cannot be opened (FileNotFoundError when it is gone), and
    :class:`TooManyPixels` past Pillow's own hard limit.
    """
    with open(path, "rb") as handle:
        try:
            with opened_header(handle) as image:  # the caller applies its own cap
                return Header(image.format or "", *upright_size(image, exif_orientation(image)))
        except Image.DecompressionBombError as exc:  # twice Pillow's limit: over any cap
            raise TooManyPixels(f"the image has too many pixels ({exc})") from None
        except Exception:  # Pillow raises many types for a broken header
            return None


def read_image(path: Path, size: int, max_pixels: int) -> Decoded | None:
    """Decode an image file to BGR, reduced when far larger than ``size``; ``None`` if it is not decodable.

    Raises :class:`TooManyPixels` over ``max_pixels`` (nothing decoded), and OSError if
    the file is unreadable (FileNotFoundError when it is gone).
    """
    import cv2
    import numpy as np

    header = read_header(path)
    if header is None:
        return None
    width, height = header.width, header.height
    if width * height > max_pixels:
        raise TooManyPixels(f"the image has too many pixels ({width}x{height}; the worker's limit is {max_pixels:,})")
    factor = reduction(max(width, height), DECODED_SIDE_PER_INFERENCE_SIZE * size, MAX_REDUCTION)
    # OpenCV's reduced decode of a TIFF turned a quarter (EXIF orientation 5-8) pours the turned pixels into
    # the stored shape: a TIFF is decoded whole, upright, then shrunk.
    decoded_reduced = header.format != "TIFF"
    reduced_flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
    flag = reduced_flags.get(factor, cv2.IMREAD_COLOR) if decoded_reduced else cv2.IMREAD_COLOR
    data = np.fromfile(path, dtype=np.uint8)
    pixels = cv2.imdecode(data, flag) if data.size else None
    del data
    if pixels is None:
        return None
    if not decoded_reduced and factor > 1:
        rows, columns = pixels.shape[:2]
        shrunk = (math.ceil(columns / factor), math.ceil(rows / factor))
        pixels = cv2.resize(pixels, shrunk, interpolation=cv2.INTER_AREA)
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


def decode_item(root: Path, item: WorkItem, size: int, max_pixels: int) -> Decoded | FileResult:
    """The item's image decoded for inference at ``size``, or the error result it gets instead.

    Raises OSError other than a missing file (the volume unavailable: an outage to ride out).
    """
    try:
        image = read_image(root / item.path, size, max_pixels)
    except FileNotFoundError:
        return FileResult(item.upload_id, None, None, [], MISSING_ERROR)
    except TooManyPixels as exc:
        return FileResult(item.upload_id, None, None, [], str(exc))
    return image if image is not None else FileResult(item.upload_id, None, None, [], DECODE_ERROR)


def found(item: WorkItem, image: Decoded, detections: list[dict[str, Any]]) -> FileResult:
    """The item's result: ``detections`` made on ``image``, in the original's pixels."""
    return FileResult(item.upload_id, image.width, image.height, scaled(detections, *image.scale))

"""Detections as labelled boxes: the geometry the web page draws in SVG, and the same boxes drawn with Pillow.

Detections are the dictionaries the workers store (Ultralytics' ``summary()``):
``{"name", "class", "confidence", "box": {"x1", "y1", "x2", "y2"}}``. Oriented
boxes (``x1``..``x4``, ``y1``..``y4``) are drawn as their upright bounds.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

# Dark enough for white label text; class k gets colour k % len(PALETTE).
PALETTE = (
    "#c62828",
    "#1565c0",
    "#2e7d32",
    "#6a1b9a",
    "#e65100",
    "#00838f",
    "#ad1457",
    "#4e342e",
    "#283593",
    "#558b2f",
)
# Decoding and drawing happen in the API process: larger images are refused rather than held in memory.
MAX_ANNOTATE_PIXELS = 50_000_000


class CannotAnnotate(ValueError):
    """The stored bytes could not be decoded into an image to draw on."""


@dataclass(frozen=True)
class Box:
    """One detection with an upright box, in the pixels of the image it was found in."""

    name: str
    cls: int
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def colour(self) -> str:
        return PALETTE[self.cls % len(PALETTE)]

    @property
    def label(self) -> str:
        return f"{self.name} {self.confidence:.0%}"


def boxes(detections: Iterable[Mapping[str, Any]]) -> list[Box]:
    """The detections that have a box (classification results have none), in their stored order."""
    found = []
    for detection in detections:
        box = detection.get("box") or {}
        xs = [float(v) for k, v in box.items() if k.startswith("x")]
        ys = [float(v) for k, v in box.items() if k.startswith("y")]
        if xs and ys:
            cls = int(detection.get("class", 0))
            name = str(detection.get("name", cls))
            found.append(Box(name, cls, float(detection.get("confidence", 0.0)), min(xs), min(ys), max(xs), max(ys)))
    return found


def draw_boxes(image: Image.Image, found: Sequence[Box]) -> Image.Image:
    """A copy of ``image`` (upright, RGB) with each box outlined and labelled in its class colour."""
    canvas = ImageOps.exif_transpose(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    longest = max(canvas.size)
    line = max(2, round(longest / 300))
    font = ImageFont.load_default(size=max(12, round(longest / 40)))
    pad = max(2, line)
    for box in found:
        draw.rectangle((box.x1, box.y1, box.x2, box.y2), outline=box.colour, width=line)
    for box in found:  # labels after all boxes, so no outline crosses a label
        left, top, right, bottom = draw.textbbox((0, 0), box.label, font=font)
        label_height = bottom - top + 2 * pad
        y = box.y1 - label_height if box.y1 >= label_height else box.y1
        draw.rectangle((box.x1, y, box.x1 + right - left + 2 * pad, y + label_height), fill=box.colour)
        draw.text((box.x1 + pad - left, y + pad - top), box.label, fill="white", font=font)
    return canvas


def annotated_image(path: Path, found: Sequence[Box]) -> tuple[bytes, str]:
    """The image at ``path`` with ``found`` drawn on it: JPEG stays JPEG, anything else becomes PNG.

    Returns the encoded bytes and their content type; raises :class:`CannotAnnotate`.
    Callers keep images over :data:`MAX_ANNOTATE_PIXELS` away from here.
    """
    try:
        with Image.open(path) as image:
            source_format = image.format
            canvas = draw_boxes(image, found)
    except Exception as exc:  # Pillow raises many types for undecodable data
        raise CannotAnnotate("the image could not be decoded") from exc
    buffer = io.BytesIO()
    if source_format == "JPEG":
        canvas.save(buffer, format="JPEG", quality=90)
        return buffer.getvalue(), "image/jpeg"
    canvas.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"

"""Detections as labelled boxes: the geometry the web page draws in SVG, and the same boxes drawn with Pillow.

Detections are the dictionaries the workers store (Ultralytics' ``summary()``):
``{"name", "class", "confidence", "box": {"x1", "y1", "x2", "y2"}}``. Oriented
boxes (``x1``..``x4``, ``y1``..``y4``) are drawn as their upright bounds.

Boxes are stored in the original image's pixels; a large image is drawn on reduced
(:mod:`app.reduced_decode`: at most ``MAX_SIDE`` on its longest side), with the
boxes scaled to it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from app.reduced_decode import MAX_SIDE, Reduced, TooLargeToDraw, decode_reduced

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


class CannotAnnotate(ValueError):
    """The stored bytes could not be decoded into an image to draw on."""


class ImageTooLargeToDraw(CannotAnnotate):
    """The image is too large to decode here, and its format has no reduced decode."""


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


def draw_boxes(canvas: Image.Image, found: Sequence[Box], scale_x: float = 1.0, scale_y: float = 1.0) -> Image.Image:
    """Outline and label each box in its class colour on ``canvas`` (RGB, upright), in place.

    Boxes are in original pixels; ``scale_x`` and ``scale_y`` are original pixels per canvas pixel.
    """
    draw = ImageDraw.Draw(canvas)
    longest = max(canvas.size)
    line = max(2, round(longest / 300))
    font = ImageFont.load_default(size=max(12, round(longest / 40)))
    pad = max(2, line)
    placed = [(box, box.x1 / scale_x, box.y1 / scale_y, box.x2 / scale_x, box.y2 / scale_y) for box in found]
    for box, x1, y1, x2, y2 in placed:
        draw.rectangle((x1, y1, x2, y2), outline=box.colour, width=line)
    for box, x1, y1, _, _ in placed:  # labels after all boxes, so no outline crosses a label
        left, top, right, bottom = draw.textbbox((0, 0), box.label, font=font)
        label_height = bottom - top + 2 * pad
        y = y1 - label_height if y1 >= label_height else y1
        draw.rectangle((x1, y, x1 + right - left + 2 * pad, y + label_height), fill=box.colour)
        draw.text((x1 + pad - left, y + pad - top), box.label, fill="white", font=font)
    return canvas


def _decoded(path: Path, max_side: int = MAX_SIDE) -> Reduced:
    try:
        return decode_reduced(path, max_side)
    except TooLargeToDraw as exc:
        raise ImageTooLargeToDraw("the image has too many pixels to draw on here") from exc
    except Exception as exc:  # Pillow raises many types for undecodable data
        raise CannotAnnotate("the image could not be decoded") from exc


def thumbnail_image(path: Path, side: int, quality: int) -> bytes:
    """The image at ``path`` reduced to at most ``side`` pixels on its longest side, as JPEG bytes.

    Raises :class:`CannotAnnotate` (:class:`ImageTooLargeToDraw` for an image too large to decode here).
    """
    image = _decoded(path, 2 * side).image  # reduced by a power of two while decoded, then resampled smoothly
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def annotated_image(path: Path, found: Sequence[Box]) -> tuple[bytes, str]:
    """The image at ``path`` with ``found`` drawn on it: JPEG stays JPEG, anything else becomes PNG.

    Returns the encoded bytes and their content type; raises :class:`CannotAnnotate`
    (:class:`ImageTooLargeToDraw` for an image too large to decode here).
    """
    reduced = _decoded(path)
    canvas = draw_boxes(reduced.image, found, reduced.scale_x, reduced.scale_y)
    buffer = io.BytesIO()
    if reduced.format == "JPEG":
        canvas.save(buffer, format="JPEG", quality=90)
        return buffer.getvalue(), "image/jpeg"
    canvas.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"

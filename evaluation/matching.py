"""Match detections (Ultralytics ``summary()`` dicts, as the API returns them) against ground truth.

Matching goes by class name, so a ground truth (``Truth``) is a name, a box and an
ignore flag: the independent generator draws them, and training reads its YOLO labels
into them to count errors by the same rule. Ignore regions follow COCO's ``iscrowd``: a box that matches no object but
overlaps an ignore region with IoU ≥ the threshold, whatever its class (the part of a
square cut by the border can be a triangle), is neither a hit nor a false box, and an
ignore region is never required.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Truth:
    """One labelled shape: its class name, tight pixel box (x1, y1, x2, y2) and whether it is an ignore region."""

    name: str
    box: tuple[float, float, float, float]
    ignore: bool = False


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class MatchStats:
    """Objects, boxes, matches and boxes on ignore regions, summed over images."""

    objects: int = 0
    detections: int = 0
    matched: int = 0
    ignored: int = 0

    @property
    def found_rate(self) -> float:
        """Share of the objects found: right class, IoU ≥ the threshold."""
        return self.matched / self.objects if self.objects else 1.0

    @property
    def false_boxes(self) -> int:
        return self.detections - self.matched - self.ignored

    @property
    def misses(self) -> int:
        return self.objects - self.matched

    @property
    def false_per_object(self) -> float:
        """Boxes that match no object, per object (boxes on images without objects count too)."""
        return self.false_boxes / self.objects if self.objects else float(self.false_boxes)

    def add(self, other: MatchStats) -> None:
        self.objects += other.objects
        self.detections += other.detections
        self.matched += other.matched
        self.ignored += other.ignored

    def __str__(self) -> str:
        return (
            f"{self.matched}/{self.objects} objects found ({self.found_rate:.1%}), "
            f"{self.false_boxes} false boxes ({self.false_per_object:.1%} per object), "
            f"{self.ignored} on ignore regions"
        )


def _box(detection: dict[str, Any]) -> tuple[float, float, float, float]:
    box = detection["box"]
    return box["x1"], box["y1"], box["x2"], box["y2"]


def match(truth: Sequence[Truth], detections: Sequence[dict[str, Any]], threshold: float = 0.5) -> MatchStats:
    """Greedy one-to-one matching, most confident detection first: same class and IoU ≥ ``threshold``.

    A detection left unmatched that overlaps an ignore region with IoU ≥ ``threshold`` is ignored.
    """
    unmatched = [labelled for labelled in truth if not labelled.ignore]
    regions = [labelled.box for labelled in truth if labelled.ignore]
    objects, matched, ignored = len(unmatched), 0, 0
    for detection in sorted(detections, key=lambda d: -d["confidence"]):
        candidates = [
            (iou(_box(detection), labelled.box), labelled)
            for labelled in unmatched
            if labelled.name == detection["name"]
        ]
        best = max(candidates, default=(0.0, None), key=lambda pair: pair[0])
        if best[1] is not None and best[0] >= threshold:
            unmatched.remove(best[1])
            matched += 1
        elif any(iou(_box(detection), region) >= threshold for region in regions):
            ignored += 1
    return MatchStats(objects=objects, detections=len(detections), matched=matched, ignored=ignored)

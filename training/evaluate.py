"""Match detections (Ultralytics ``summary()`` dicts) against generated ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from training.shapes import Shape


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class MatchStats:
    objects: int = 0
    detections: int = 0
    matched: int = 0

    @property
    def match_rate(self) -> float:
        return self.matched / self.objects if self.objects else 1.0

    @property
    def extra_rate(self) -> float:
        return (self.detections - self.matched) / self.detections if self.detections else 0.0

    def add(self, other: MatchStats) -> None:
        self.objects += other.objects
        self.detections += other.detections
        self.matched += other.matched


def match(truth: Sequence[Shape], detections: Sequence[dict[str, Any]], threshold: float = 0.5) -> MatchStats:
    """Greedy one-to-one matching, most confident detection first: same class and IoU ≥ ``threshold``."""
    unmatched = list(truth)
    matched = 0
    for detection in sorted(detections, key=lambda d: -d["confidence"]):
        box = detection["box"]
        candidates = [
            (iou((box["x1"], box["y1"], box["x2"], box["y2"]), shape.box), shape)
            for shape in unmatched
            if shape.cls == detection["class"]
        ]
        best = max(candidates, default=(0.0, None), key=lambda pair: pair[0])
        if best[1] is not None and best[0] >= threshold:
            unmatched.remove(best[1])
            matched += 1
    return MatchStats(objects=len(truth), detections=len(detections), matched=matched)

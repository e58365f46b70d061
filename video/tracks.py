"""Track ids across a whole video, from the detections its segments stored (a tracked video job's 'finish' part).

Segments are detected independently, so ids cannot come from them: once every segment has its ``frame_results``, the
finish part feeds the frames in time order to one tracker, which gives ids continuous across segment borders.

Why Roboflow's ``trackers`` (``ByteTrackTracker``): supervision's ``sv.ByteTrack`` left supervision (0.31 has none);
its docs now send tracking to ``trackers``, the same maintainers' package. Its ByteTrack works from boxes alone (no
image), on numpy, scipy and supervision: no torch, which CPU workers run without (issue 28). Ultralytics'
``BYTETracker`` wants Ultralytics' ``Results`` and imports torch.

What the library does, and so what the ids mean:
- ByteTrack associates twice per frame: boxes scoring at least :data:`HIGH_CONFIDENCE_THRESHOLD` first, then the
  lower ones against the tracks still unmatched, so a track survives a few low-score frames (an occlusion).
- A track gets its id on its :data:`CONFIRMATION_FRAMES`-th consecutive detection, as in the paper: the first detection
  of each object, and a box seen only once, get no id (-1); a one-frame false positive spends no id.
- It is class-agnostic: a box continues the track it overlaps best whatever its class, so a detector flickering
  between similar classes (car/truck) keeps one id; each box keeps its own class in ``frame_results``.
- It returns every box, reordered: each box carries its input position through ``Detections.data`` (which
  supervision slices along with the boxes) and gets its id back at that position.
- Ids start at 1 here (the library counts from 0); -1 means no track.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker

NO_TRACK = -1
# The thresholds of Ultralytics' bytetrack.yaml, which `yolo track` users know: a box a default job keeps
# (YOLO's default conf, 0.25) may start a track and takes part in the first association.
ACTIVATION_THRESHOLD = 0.25
HIGH_CONFIDENCE_THRESHOLD = 0.25
# A box continues a track when it overlaps the track's predicted box by this IoU: the trackers library's default.
# Ultralytics' match_thresh 0.8 (0.2 as an IoU) lost small fast objects at sampled rates: in the 2-minute test
# video sampled at 10 fps a 61 px triangle moving 29 px a frame changed id 41 times (IDF1 0.71); at 0.1, 0.89.
MATCHING_IOU = 0.1
# A lost track waits this long for its object to come back: ByteTrack's 30 frames at 30 fps. In seconds, so a
# sampled video (fps=2) keeps tracks as long in time as a full-rate one.
LOST_TRACK_SECONDS = 1.0
# ByteTrack's confirmation: a track needs two consecutive detections before it is given an id.
CONFIRMATION_FRAMES = 2
# trackers states its lost-track buffer in frames of a 30 fps video, and scales it by the real rate itself.
_BUFFER_REFERENCE_FPS = 30
_INPUT_INDEX = "input_index"


@dataclass(frozen=True)
class TrackInput:
    """One sampled frame's stored detections."""

    pts: int
    boxes: np.ndarray  # (N, 4) float32, x1, y1, x2, y2 in display pixels
    scores: np.ndarray  # (N,)
    classes: np.ndarray  # (N,) int


def assign_tracks(frames: Iterable[TrackInput], frame_rate: float) -> Iterator[tuple[int, list[int]]]:
    """Each frame's pts and one track id per box, in the boxes' order (-1: no track).

    ``frames`` come in time order; ``frame_rate`` is the sampled rate (the job's fps, else the video's). Frames are
    read one at a time: memory is the tracker's live tracks, whatever the video's length.
    """
    tracker = new_tracker(frame_rate)
    for frame in frames:
        yield frame.pts, track_ids(tracker, frame)


def new_tracker(frame_rate: float) -> ByteTrackTracker:
    return ByteTrackTracker(
        lost_track_buffer=round(LOST_TRACK_SECONDS * _BUFFER_REFERENCE_FPS),
        frame_rate=frame_rate,
        track_activation_threshold=ACTIVATION_THRESHOLD,
        minimum_consecutive_frames=CONFIRMATION_FRAMES,
        minimum_iou_threshold=MATCHING_IOU,
        high_conf_det_threshold=HIGH_CONFIDENCE_THRESHOLD,
    )


def track_ids(tracker: ByteTrackTracker, frame: TrackInput) -> list[int]:
    """Advance ``tracker`` by one frame: the id of each of its boxes, in their order."""
    count = len(frame.boxes)
    detections = sv.Detections(
        xyxy=np.asarray(frame.boxes, dtype=np.float32).reshape(count, 4),
        confidence=np.asarray(frame.scores, dtype=np.float32),
        class_id=np.asarray(frame.classes, dtype=int),
        data={_INPUT_INDEX: np.arange(count)},
    )
    tracked = tracker.update(detections)
    ids = np.full(count, NO_TRACK, dtype=int)
    if len(tracked):
        library_ids = tracked.tracker_id
        ids[tracked.data[_INPUT_INDEX]] = np.where(library_ids >= 0, library_ids + 1, NO_TRACK)
    return ids.tolist()

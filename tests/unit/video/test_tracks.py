"""Track ids over synthetic videos: objects moving at constant velocity, with jitter, dropped and low-score frames."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import motmetrics
import numpy as np
import pytest
import supervision as sv

from video.tracks import HIGH_CONFIDENCE_THRESHOLD, NO_TRACK, TrackInput, assign_tracks

FRAME_RATE = 10.0
FRAMES = 80
PTS_STEP = 512  # a 1/5120 s time base at 10 fps: pts are not frame numbers


@dataclass(frozen=True)
class Mover:
    """An object moving at constant velocity (pixels per frame)."""

    x: float
    y: float
    dx: float
    dy: float
    width: float
    height: float
    label: int

    def box(self, frame: int) -> np.ndarray:
        x1, y1 = self.x + self.dx * frame, self.y + self.dy * frame
        return np.array([x1, y1, x1 + self.width, y1 + self.height])


MOVERS = [
    Mover(50, 100, 6, 0, 40, 80, 0),
    # Crosses the first one around frame 50, overlapping it (IoU ≈ 0.6 when aligned).
    Mover(600, 120, -5, 0, 40, 80, 0),
    Mover(100, 400, 3, -1, 120, 60, 2),
    Mover(700, 500, -2, -2, 60, 60, 5),
]
# Frames where the detector misses an object.
DROPPED = {1: range(30, 34), 3: range(50, 53)}
# Frames where an object scores under the high threshold: only ByteTrack's second association can keep its track.
LOW_SCORE = {2: range(40, 44)}
LOW_CONFIDENCE = 0.15


@dataclass(frozen=True)
class Scene:
    frames: list[TrackInput]
    truth: list[list[int]]  # per frame, the index in MOVERS of each box, in the frame's (shuffled) box order


def synthetic_scene(seed: int = 7) -> Scene:
    rng = np.random.default_rng(seed)
    frames, truth = [], []
    for frame in range(FRAMES):
        present = [i for i in range(len(MOVERS)) if frame not in DROPPED.get(i, ())]
        order = [present[i] for i in rng.permutation(len(present))]
        boxes = np.array([MOVERS[i].box(frame) + rng.normal(0, 1, 4) for i in order], dtype=np.float32)
        scores = np.array([score_of(i, frame, rng) for i in order], dtype=np.float32)
        classes = np.array([MOVERS[i].label for i in order], dtype=int)
        frames.append(TrackInput(frame * PTS_STEP, boxes.reshape(-1, 4), scores, classes))
        truth.append(order)
    return Scene(frames, truth)


def score_of(mover: int, frame: int, rng: np.random.Generator) -> float:
    low = frame in LOW_SCORE.get(mover, ())
    return LOW_CONFIDENCE if low else float(rng.uniform(0.6, 0.95))


def ids_per_object(scene: Scene) -> dict[int, list[int]]:
    ids_of = defaultdict(list)
    for truth, (_, ids) in zip(scene.truth, assign_tracks(scene.frames, FRAME_RATE), strict=True):
        for mover, track in zip(truth, ids, strict=True):
            ids_of[mover].append(track)
    return ids_of


def test_each_object_keeps_one_id_from_its_second_detection() -> None:
    ids_of = ids_per_object(synthetic_scene())

    assert LOW_CONFIDENCE < HIGH_CONFIDENCE_THRESHOLD  # the LOW_SCORE frames go to the second association
    for ids in ids_of.values():
        assert ids[0] == NO_TRACK  # ByteTrack confirms a track on its second detection
        assert len(set(ids[1:])) == 1, ids  # no switch: not at the crossing, the gaps, nor the low-score frames
    track_of = [ids_of[mover][1] for mover in range(len(MOVERS))]
    assert min(track_of) >= 1
    assert sorted(track_of) == [1, 2, 3, 4]


def test_ids_come_back_in_the_input_order_and_length() -> None:
    scene = synthetic_scene()

    results = list(assign_tracks(scene.frames, FRAME_RATE))

    assert [pts for pts, _ in results] == [frame.pts for frame in scene.frames]
    assert [len(ids) for _, ids in results] == [len(frame.boxes) for frame in scene.frames]


def test_mota_on_the_synthetic_scene() -> None:
    scene = synthetic_scene(seed=11)
    accumulator = motmetrics.MOTAccumulator(auto_id=True)
    for frame, truth, (_, ids) in zip(scene.frames, scene.truth, assign_tracks(scene.frames, FRAME_RATE), strict=True):
        tracked = np.array(ids) != NO_TRACK
        accumulator.update(truth, np.array(ids)[tracked].tolist(), distances(frame.boxes, frame.boxes[tracked]))

    summary = motmetrics.metrics.create().compute(accumulator, metrics=["mota", "num_switches"], name="synthetic")

    assert int(summary["num_switches"].iloc[0]) == 0
    assert float(summary["mota"].iloc[0]) >= 0.95


def distances(truth_boxes: np.ndarray, tracked_boxes: np.ndarray) -> np.ndarray:
    """motmetrics' 1 - IoU matrix (nan: no match under IoU 0.5); its own iou_matrix calls numpy 1's asfarray."""
    iou = sv.box_iou_batch(truth_boxes, tracked_boxes)
    return np.where(iou >= 0.5, 1 - iou, np.nan)


def still_box(frame: int, x: float = 100.0) -> TrackInput:
    return TrackInput(frame, np.array([[x, 100, x + 50, 200]], dtype=np.float32), np.array([0.9]), np.array([0]))


def empty_frame(frame: int) -> TrackInput:
    return TrackInput(frame, np.zeros((0, 4), dtype=np.float32), np.zeros(0), np.zeros(0, dtype=int))


def test_an_empty_frame_gets_no_ids_and_keeps_the_track() -> None:
    frames = [empty_frame(0), still_box(1), still_box(2), empty_frame(3), still_box(4)]

    assert list(assign_tracks(frames, FRAME_RATE)) == [(0, []), (1, [NO_TRACK]), (2, [1]), (3, []), (4, [1])]


def test_a_box_seen_once_gets_no_id_and_spends_none() -> None:
    once = still_box(0, x=900)
    frames = [once, *(still_box(frame) for frame in range(1, 4))]

    ids = [ids for _, ids in assign_tracks(frames, FRAME_RATE)]

    assert ids == [[NO_TRACK], [NO_TRACK], [1], [1]]


@pytest.mark.parametrize(("gap_frames", "same_track"), [(8, True), (15, False)])
def test_a_lost_track_waits_one_second(gap_frames: int, same_track: bool) -> None:
    seen = [still_box(frame) for frame in range(3)]
    back = [still_box(frame) for frame in range(3 + gap_frames, 6 + gap_frames)]
    gap = [empty_frame(frame) for frame in range(3, 3 + gap_frames)]

    ids = [ids for _, ids in assign_tracks([*seen, *gap, *back], FRAME_RATE)]

    assert ids[2] == [1]
    assert ids[-1] == ([1] if same_track else [2])


def test_a_class_flicker_keeps_the_track() -> None:
    frames = [
        TrackInput(frame, still_box(frame).boxes, np.array([0.9]), np.array([frame % 2 + 2])) for frame in range(6)
    ]

    assert [ids for _, ids in assign_tracks(frames, FRAME_RATE)] == [[NO_TRACK], *[[1]] * 5]


def test_frames_are_read_as_they_come() -> None:
    def endless() -> Iterator[TrackInput]:
        for frame in itertools.count():
            yield still_box(frame)

    first = list(itertools.islice(assign_tracks(endless(), FRAME_RATE), 3))

    assert first == [(0, [NO_TRACK]), (1, [1]), (2, [1])]

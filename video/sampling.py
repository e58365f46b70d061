"""The one sampling rule of video jobs: which frames a job analyses, and which segment owns each of them.

Segments are planned at submit, listed and decoded by different workers, and counted for progress.
If each of those places decided membership its own way, a frame on a segment's edge could be analysed
twice or never, and variable frame rate video or B-frames (which a demuxer hands over in decode order,
not time order) would make the disagreements likely. So every decision is taken here, from a frame's
time alone (seconds from the stream's start):

- the window is [start, end); without a sampling rate every frame in it is sampled;
- with a rate F, time is cut into slots of 1/F s from start and the first frame of a slot is sampled;
- segments are whole slots (with F) or ``segment_seconds`` long (without), the last one ending at end.

Pure functions, no decoding: :mod:`video.frames` applies them to the frames it demuxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

# Slack, in slots (or segments), so that a time exactly on an edge, computed as a float a hair under it
# (k / fps * fps == k - 1e-15), falls on the side its exact value says.
EDGE_SLACK = 1e-9


@dataclass(frozen=True)
class Window:
    """A job's time window [start, end) in seconds of stream time, its sampling rate and its segments' length.

    ``fps`` None samples every frame. An empty window (end <= start) has no segment.
    """

    start: float
    end: float
    fps: float | None
    segment_seconds: float

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ValueError(f"the window cannot start before the stream: start={self.start}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"the sampling rate must be positive: fps={self.fps}")
        if self.segment_seconds <= 0:
            raise ValueError(f"segments must last some time: segment_seconds={self.segment_seconds}")

    @property
    def segment_length(self) -> float:
        """S, a segment's seconds; with fps, whole slots: L = max(1, round(segment_seconds * fps)), S = L / fps."""
        if self.fps is None:
            return self.segment_seconds
        return self._slots_per_segment(self.fps) / self.fps

    @property
    def segment_count(self) -> int:
        """How many segments cover the window: at least one when it is not empty."""
        if self.end <= self.start:
            return 0
        return max(1, math.ceil((self.end - self.start) / self.segment_length - EDGE_SLACK))

    def segment_of(self, time: float) -> int | None:
        """The index of the segment that owns a frame at ``time``; None when the time is outside [start, end)."""
        if not self.start <= time < self.end:
            return None
        if self.fps is None:
            index = math.floor((time - self.start) / self.segment_seconds + EDGE_SLACK)
        else:
            index = self.slot_of(time) // self._slots_per_segment(self.fps)
        # The last segment ends at `end`, even where a float puts a time just under it one segment further.
        return min(index, self.segment_count - 1)

    def slot_of(self, time: float) -> int:
        """The sampling slot of a frame at ``time``: floor((time - start) * fps), edges on the later side."""
        if self.fps is None:
            raise ValueError("a window without a sampling rate has no slots")
        return math.floor((time - self.start) * self.fps + EDGE_SLACK)

    def segments(self) -> list[tuple[float, float]]:
        """Each segment's [t0, t1) in seconds, the last one ending at `end`.

        For seeking and for bounding a demux pass only: which segment owns a frame is :meth:`segment_of`'s
        decision, which these float bounds approximate.
        """
        length = self.segment_length
        count = self.segment_count
        return [
            (self.start + index * length, self.end if index == count - 1 else self.start + (index + 1) * length)
            for index in range(count)
        ]

    def estimated_frames(self, average_rate: float) -> int:
        """How many frames the window samples, estimated from the stream's nominal rate (progress before listing)."""
        seconds = max(0.0, self.end - self.start)
        sampled_rate = average_rate if self.fps is None else min(self.fps, average_rate)
        return round(seconds * sampled_rate)

    def _slots_per_segment(self, fps: float) -> int:
        """L, the whole slots of one segment."""
        return max(1, round(self.segment_seconds * fps))


def window_of(
    duration: float, start: float | None, end: float | None, fps: float | None, segment_seconds: float
) -> Window:
    """A job's window over a video of ``duration`` seconds: start defaults to 0, end to the duration and within it."""
    window_end = duration if end is None else min(end, duration)
    return Window(start=0.0 if start is None else start, end=window_end, fps=fps, segment_seconds=segment_seconds)


def sampled(times: Sequence[float], window: Window, segment: int) -> list[int]:
    """Indices into ``times`` of the frames that ``segment`` samples.

    ``times`` are the times of the frames a demux pass found around the segment, in ascending order: a
    demuxer gives B-frames in decode order, so the caller sorts by pts first (unsorted input is refused,
    as it would sample a later frame of a slot). Frames of other segments may be included; they are ignored.
    Without fps every frame the segment owns is sampled; with fps, the first frame of each of its slots.
    """
    if any(later < earlier for earlier, later in pairwise(times)):
        raise ValueError("frame times must be in ascending order: sort the demuxed frames by pts first")
    owned = [index for index, time in enumerate(times) if window.segment_of(time) == segment]
    if window.fps is None:
        return owned
    first_of_slot: dict[int, int] = {}
    for index in owned:
        first_of_slot.setdefault(window.slot_of(times[index]), index)
    return list(first_of_slot.values())

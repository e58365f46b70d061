"""Decoding the frames one segment of a video samples, within bounded memory, losing only what is corrupt.

A worker analyses one segment of a video (:mod:`video.sampling` decides which frames it owns) and must
report exactly which of them it analysed and which it could not decode. So a segment is read twice:

- :meth:`SegmentReader.listed` demuxes the segment's time range without decoding, and lists its sampled
  frames exactly. It takes every video packet with a pts for one frame: true of the video codecs and
  containers the service accepts (MP4/MOV, Matroska/WebM), where a packet holds one picture and carries its
  presentation time; a container that leaves pts unset (raw streams, AVI with B-frames) lists nothing.
- :meth:`SegmentReader.frames` decodes from the keyframe before the first frame still to do and yields the
  listed frames as BGR pixels, turned upright, one at a time. A packet the decoder refuses loses its frames
  only; what was listed and never yielded is reported by :meth:`SegmentReader.missing`.

PyAV rather than OpenCV's VideoCapture or decord: its wheels carry FFmpeg, it gives packets and their pts
(so listing needs no decoding and frames are matched by pts, not by a frame counter that seeking breaks),
it decodes on several threads, and it is maintained (decord is not).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain, groupby
from pathlib import Path
from types import TracebackType
from typing import Self

import av
import numpy as np
from av.container import InputContainer
from av.video.stream import VideoStream

from video.sampling import Window, sampled

# A decoder hands frames out of decode order by at most its reorder delay: at most 16 frames for H.264 and
# HEVC. Once this many packets in a row are past the last time wanted, no later packet can be before it.
REORDER_PACKETS = 32
# When a seek lands on a keyframe after the time asked for (a container whose index is by decode time),
# the next seek asks this much earlier, then twice as much, and so on.
SEEK_BACK_SECONDS = 1.0
# How many ranges of undecodable frames an error names one by one; it counts the rest.
NAMED_RANGES = 5


class VideoError(Exception):
    """A video cannot be read as the job asks."""


class FrameTooLarge(VideoError):
    """The video's frames have more pixels than the workers' cap: refused before decoding."""


class NotDecodable(VideoError):
    """The file does not open as a video (no video stream, a truncated MP4 without its index, not a video)."""


@dataclass(frozen=True)
class FrameRef:
    """A frame of the stream: its pts (stream time base), its time in seconds from the stream's start, its number.

    ``frame`` is round(time * average rate): the frame's number at the nominal rate, also for VFR video.
    """

    pts: int
    time: float
    frame: int


# eq=False: pixels are an array, which has no truth value to compare by.
@dataclass(frozen=True, eq=False)
class Frame:
    """A decoded sampled frame: BGR uint8 pixels, H×W×3, upright (the stream's rotation applied)."""

    ref: FrameRef
    pixels: np.ndarray


@dataclass(frozen=True)
class MissingRange:
    """A run of consecutive listed frames that could not be decoded, by frame number, and how many they are."""

    first: int
    last: int
    count: int

    def describe(self) -> str:
        if self.count == 1:
            return f"frame {self.first} could not be decoded (1 frame)"
        return f"frames {self.first}-{self.last} could not be decoded ({self.count} frames)"


class SegmentReader:
    """Lists and decodes the sampled frames that one segment of a video owns; a context manager over the file.

    ``done`` holds the pts of frames already analysed (a resumed segment): they are listed but not decoded again.
    """

    def __init__(
        self, path: Path, window: Window, segment: int, done: Collection[int] = (), *, max_pixels: int
    ) -> None:
        if not 0 <= segment < window.segment_count:
            raise ValueError(f"the window has {window.segment_count} segments, not a segment {segment}")
        self.path = path
        self.window = window
        self.segment = segment
        self.max_pixels = max_pixels
        self._done = frozenset(done)
        self._container: InputContainer | None = None
        self._rate = Fraction(0)
        self._listed: list[FrameRef] | None = None
        self._yielded: set[int] = set()
        self._finished = False

    def __enter__(self) -> Self:
        self._container = open_video(self.path)
        try:
            refuse_large_frames(self._stream, self.max_pixels)
            self._rate = nominal_rate(self._stream)
        except VideoError:
            self._container.close()
            self._container = None
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._opened.close()
        self._container = None

    def listed(self) -> list[FrameRef]:
        """The sampled frames this segment owns, in pts order, from a demux pass (no decoding)."""
        if self._listed is None:
            start, end = self.window.segments()[self.segment]
            owned = {
                packet.pts: self._ref(packet.pts)
                for packet in self._packets(start, end)
                if self.window.segment_of(self._time(packet.pts)) == self.segment
            }
            in_time_order = sorted(owned.values(), key=lambda ref: ref.pts)
            times = [ref.time for ref in in_time_order]
            self._listed = [in_time_order[index] for index in sampled(times, self.window, self.segment)]
        return list(self._listed)

    def frames(self) -> Iterator[Frame]:
        """The listed frames not in ``done``, decoded, in pts order; the undecodable ones are skipped."""
        to_do = [ref for ref in self.listed() if ref.pts not in self._done]
        pending = {ref.pts: ref for ref in to_do}
        self._yielded.clear()
        self._finished = False
        if to_do:
            for decoded in self._decoded(to_do[0].time, to_do[-1].time):
                ref = pending.pop(decoded.pts, None) if decoded.pts is not None else None
                if ref is None:
                    continue
                self._yielded.add(ref.pts)
                yield Frame(ref, upright_bgr(decoded))
                if not pending:
                    break
        self._finished = True

    def missing(self) -> list[FrameRef]:
        """The listed frames neither in ``done`` nor yielded: known once :meth:`frames` has been iterated to its end."""
        if not self._finished:
            raise RuntimeError("missing frames are known once frames() has been iterated to its end")
        return [ref for ref in self.listed() if ref.pts not in self._done and ref.pts not in self._yielded]

    def missing_ranges(self) -> list[MissingRange]:
        """The missing frames as runs of consecutive listed frames."""
        missing = {ref.pts for ref in self.missing()}
        ranges = []
        for is_missing, run in groupby(self.listed(), key=lambda ref: ref.pts in missing):
            if is_missing:
                refs = list(run)
                ranges.append(MissingRange(first=refs[0].frame, last=refs[-1].frame, count=len(refs)))
        return ranges

    @property
    def error(self) -> str | None:
        """What could not be decoded, by frame ranges: "frames 1200-1319 could not be decoded (120 frames)"; or None."""
        ranges = self.missing_ranges()
        if not ranges:
            return None
        named, rest = ranges[:NAMED_RANGES], ranges[NAMED_RANGES:]
        described = [missing_range.describe() for missing_range in named]
        if rest:
            more_frames = sum(missing_range.count for missing_range in rest)
            described.append(f"{more_frames} more frames in {len(rest)} more ranges could not be decoded")
        return "; ".join(described)

    @property
    def _opened(self) -> InputContainer:
        if self._container is None:
            raise RuntimeError("a SegmentReader reads inside its with block")
        return self._container

    @property
    def _stream(self) -> VideoStream:
        return self._opened.streams.video[0]

    def _time(self, pts: int) -> float:
        stream = self._stream
        return float((pts - (stream.start_time or 0)) * stream.time_base)

    def _ref(self, pts: int) -> FrameRef:
        time = self._time(pts)
        return FrameRef(pts=pts, time=time, frame=round(time * self._rate))

    def _decoded(self, first_time: float, last_time: float) -> Iterator[av.VideoFrame]:
        """Frames decoded from the keyframe before ``first_time`` until past ``last_time``, one at a time."""
        for packet in self._packets(first_time, last_time):
            yield from self._decode(packet)
        # The decoder still holds the frames it reorders: drain it.
        yield from self._decode(None)

    def _decode(self, packet: av.Packet | None) -> list[av.VideoFrame]:
        """The frames a packet completes (at most a few: the drain gives the reordered ones); none if it is corrupt."""
        try:
            return self._stream.codec_context.decode(packet)
        except av.FFmpegError:
            # A corrupt packet loses its frames only: they stay listed and unyielded, and are reported missing.
            return []

    def _packets(self, first_time: float, last_time: float) -> Iterator[av.Packet]:
        """Video packets with a pts, in decode order, from a keyframe at or before ``first_time`` until
        :data:`REORDER_PACKETS` packets in a row are past ``last_time`` (or the file ends)."""
        packets_past = 0
        for packet in self._packets_from_keyframe_before(first_time):
            if packet.pts is None or packet.size == 0:
                continue  # the demuxer's flush packets, and packets no frame can be matched to
            yield packet
            packets_past = packets_past + 1 if self._time(packet.pts) > last_time else 0
            if packets_past == REORDER_PACKETS:
                return

    def _packets_from_keyframe_before(self, time: float) -> Iterator[av.Packet]:
        """Demuxed packets from a seek that lands at or before ``time``, so that no frame from ``time`` on is skipped.

        A seek lands on the keyframe before the target by the container's index; where the index is by decode
        time, that keyframe's presentation time can be after the target (B-frames), and frames before it in
        time come before it in the file: then seek again, further back.
        """
        seek_back = SEEK_BACK_SECONDS
        target = time
        while True:
            self._seek(max(target, 0.0))
            packets = self._opened.demux(self._stream)
            first = next((packet for packet in packets if packet.pts is not None), None)
            if first is None or self._time(first.pts) <= time or target <= 0:
                return packets if first is None else chain([first], packets)
            target -= seek_back
            seek_back *= 2

    def _seek(self, time: float) -> None:
        stream = self._stream
        pts = (stream.start_time or 0) + math.floor(Fraction(time) / stream.time_base)
        try:
            self._opened.seek(pts, stream=stream, backward=True)
        except av.FFmpegError as error:
            raise NotDecodable(f"{self.path.name} cannot be sought to {time:.3f} s: {error}") from error


def open_video(path: Path) -> InputContainer:
    """The file opened for threaded decoding of its first video stream; NotDecodable when it has none."""
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        if isinstance(error, OSError):
            raise  # a missing or unreadable file is not the video's fault
        raise NotDecodable(f"{path.name} does not open as a video: {error}") from error
    if not container.streams.video:
        container.close()
        raise NotDecodable(f"{path.name} has no video stream")
    container.streams.video[0].thread_type = "AUTO"
    return container


def refuse_large_frames(stream: VideoStream, max_pixels: int) -> None:
    """Raise FrameTooLarge when the stream's frames have more than ``max_pixels`` pixels."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > max_pixels:
        raise FrameTooLarge(f"{width}x{height} frames have more than {max_pixels} pixels")


def nominal_rate(stream: VideoStream) -> Fraction:
    """The stream's average frame rate (what frame numbers count in), or the rate FFmpeg guesses without one."""
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise NotDecodable("the video stream has no frame rate")
    return rate


def upright_bgr(frame: av.VideoFrame) -> np.ndarray:
    """The frame's pixels as BGR, turned by its display rotation (whole quarter turns; mirroring is ignored)."""
    pixels = frame.to_ndarray(format="bgr24")
    # `rotation` is the counter-clockwise angle the display matrix turns the stored picture by, as np.rot90 turns.
    quarter_turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, quarter_turns)) if quarter_turns else pixels

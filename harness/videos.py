"""Generated test videos with known tracks, in each accepted format, and faulty ones, for issue 26's tests and bench.

Video jobs sample frames, detect shapes and link them into tracks; their functional tests and ``make bench``
need videos whose every frame's boxes and track ids are known, in the containers and codecs users upload,
and files that break the way uploads do: a corrupt stretch, a missing ``moov``, no frames at all, a header
declaring a frame far over the pixel cap. Everything here is a pure function of its arguments (seed included).

PyAV (FFmpeg's libraries) encodes and muxes: it writes every container and codec we accept with the same
calls the service decodes with, and reports packet positions, which the corruption needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from harness.scenes import CLASS_NAMES, draw_shape, light_colour, shape_box, shape_colour, shape_reach

# Fast settings: a 2-minute 1280x720 video encodes in well under a minute on 2 cores (ultrafast takes half the
# time of veryfast). Ultrafast drops B-frames: two are asked back, so presentation order differs from decode
# order as in camera files.
ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "ultrafast", "crf": "23", "bf": "2"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0", "row-mt": "1"},
}
# Shapes at 1280x720: radius 30-60 px, so 60-120 px across, about 18-36 px at the model's input of 384.
RADIUS_RANGE = (30.0, 60.0)
SPEED_RANGE = (60.0, 240.0)  # pixels per second at 1280x720
GAP = 12.0  # pixels at 1280x720 kept between two shapes' circles: a tracker never sees them merge
REFERENCE_SIZE = (1280, 720)
# Muxers otherwise write random ids (Matroska's segment and track UIDs) and their version: the same seed
# then gives different bytes.
BITEXACT = {"fflags": "+bitexact"}
MOT_TAIL = ",1,-1,-1,-1"  # a MOT ground-truth line's confidence (1: counted) and unused world coordinates
# The keyframe header of a VP9 frame (profile 0): frame marker, profile, flags (1 byte), sync code (3 bytes),
# colour space and range (4 bits), then width - 1 and height - 1 in 16 bits each, from bit 36.
VP9_HEADER_BYTES = 9
VP9_SIZE_SHIFT = VP9_HEADER_BYTES * 8 - 36 - 32  # the size's place counted from the header's last bit


@dataclass(frozen=True)
class VideoFormat:
    """A container (FFmpeg muxer name), the file suffix it takes, and the encoder of its video."""

    container: str
    suffix: str
    codec: str


# The container and codec pairs video uploads are tested in.
FORMATS: tuple[VideoFormat, ...] = (
    VideoFormat("mp4", ".mp4", "libx264"),
    VideoFormat("matroska", ".mkv", "libx264"),
    VideoFormat("webm", ".webm", "libvpx-vp9"),
    VideoFormat("mov", ".mov", "libx264"),
)


@dataclass(frozen=True)
class TruthBox:
    """One shape in one frame: its track, class (``harness.scenes.CLASS_NAMES``) and box in pixels."""

    track_id: int
    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class GroundTruth:
    """Every frame's shapes, frame ``i`` shown at ``i / fps`` seconds from the stream's start."""

    fps: int
    width: int
    height: int
    frames: tuple[tuple[TruthBox, ...], ...]

    @property
    def duration(self) -> float:
        return len(self.frames) / self.fps

    def frames_at(self, fps: float | None = None, start: float = 0.0, end: float | None = None) -> list[int]:
        """The frames a job samples in ``[start, end)`` seconds at ``fps`` (every frame when None).

        Issue 26's sampling rule, stated again on purpose so that it checks ``video.sampling`` rather than
        agreeing with it: slot(t) = floor((t - start) * fps + 1e-9), and a slot's sampled frame is its first.
        """
        end = self.duration if end is None else end
        inside = [index for index in range(len(self.frames)) if start <= index / self.fps < end]
        if fps is None:
            return inside
        first_of_slot: dict[int, int] = {}
        for index in inside:
            first_of_slot.setdefault(math.floor((index / self.fps - start) * fps + 1e-9), index)
        return sorted(first_of_slot.values())

    def to_mot(self, path: Path, frames: Sequence[int] | None = None) -> None:
        """Write MOT Challenge ground truth, ``frame,id,x,y,w,h,1,-1,-1,-1`` (frame 1-based), of ``frames``
        (every frame when None): the format ``motmetrics`` reads. x and y stay 0-based pixels: motmetrics
        shifts ground truth and results alike, so scores do not change."""
        chosen = range(len(self.frames)) if frames is None else frames
        lines = [
            f"{index + 1},{box.track_id},{box.x1:.2f},{box.y1:.2f},{box.x2 - box.x1:.2f},{box.y2 - box.y1:.2f}"
            + MOT_TAIL
            for index in chosen
            for box in self.frames[index]
        ]
        path.write_text("".join(f"{line}\n" for line in lines))


@dataclass
class _Mover:
    """A shape's state while the video is simulated: it moves at constant velocity between bounces."""

    track_id: int
    class_id: int
    radius: float
    angle: float
    colour: tuple[int, int, int]
    x: float
    y: float
    vx: float  # pixels per frame
    vy: float

    @property
    def reach(self) -> float:
        return shape_reach(self.class_id, self.radius)

    def truth(self) -> TruthBox:
        return TruthBox(
            self.track_id, self.class_id, *shape_box(self.class_id, self.x, self.y, self.radius, self.angle)
        )


def _movers(rng: np.random.Generator, count: int, width: int, height: int, fps: int) -> list[_Mover]:
    """``count`` shapes placed apart from each other, inside the frame, each with a speed and heading."""
    scale = min(width / REFERENCE_SIZE[0], height / REFERENCE_SIZE[1])
    movers: list[_Mover] = []
    for track_id in range(1, count + 1):
        for _attempt in range(200):
            class_id = int(rng.integers(0, len(CLASS_NAMES)))
            radius = float(rng.uniform(*RADIUS_RANGE)) * scale
            reach = shape_reach(class_id, radius)
            x, y = float(rng.uniform(reach, width - reach)), float(rng.uniform(reach, height - reach))
            if all(math.hypot(x - m.x, y - m.y) > reach + m.reach + GAP * scale for m in movers):
                break
        else:
            raise ValueError(f"{count} shapes do not fit apart in {width}x{height}")
        speed = float(rng.uniform(*SPEED_RANGE)) * scale / fps
        heading = float(rng.uniform(0, 2 * math.pi))
        angle, colour = float(rng.uniform(0, 2 * math.pi)), shape_colour(rng)
        movers.append(
            _Mover(
                track_id, class_id, radius, angle, colour, x, y, speed * math.cos(heading), speed * math.sin(heading)
            )
        )
    return movers


def _bounce_off_borders(mover: _Mover, width: int, height: int) -> None:
    reach = mover.reach
    if (mover.x < reach and mover.vx < 0) or (mover.x > width - reach and mover.vx > 0):
        mover.vx = -mover.vx
    if (mover.y < reach and mover.vy < 0) or (mover.y > height - reach and mover.vy > 0):
        mover.vy = -mover.vy
    mover.x = min(max(mover.x, reach), width - reach)
    mover.y = min(max(mover.y, reach), height - reach)


def _bounce_apart(a: _Mover, b: _Mover, gap: float) -> None:
    """An elastic collision of equal masses when ``a`` and ``b`` come within ``gap`` of touching: they swap the
    parts of their velocities along the line between their centres."""
    dx, dy = b.x - a.x, b.y - a.y
    distance = math.hypot(dx, dy)
    approaching = (b.vx - a.vx) * dx + (b.vy - a.vy) * dy < 0
    if distance >= a.reach + b.reach + gap or not approaching or distance == 0:
        return
    nx, ny = dx / distance, dy / distance
    along_a, along_b = a.vx * nx + a.vy * ny, b.vx * nx + b.vy * ny
    a.vx, a.vy = a.vx + (along_b - along_a) * nx, a.vy + (along_b - along_a) * ny
    b.vx, b.vy = b.vx + (along_a - along_b) * nx, b.vy + (along_a - along_b) * ny


def _step(movers: list[_Mover], width: int, height: int, gap: float) -> None:
    """Advance every shape by one frame."""
    for mover in movers:
        mover.x += mover.vx
        mover.y += mover.vy
        _bounce_off_borders(mover, width, height)
    for index, a in enumerate(movers):
        for b in movers[index + 1 :]:
            _bounce_apart(a, b, gap)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A light colour with soft, cloudy shading and faint fixed grain (BGR)."""
    coarse = rng.normal(0, 1, size=(4, 6, 3)).astype(np.float32)
    clouds = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * 10
    grain = rng.normal(0, 2, size=(height, width, 3)).astype(np.float32)
    return np.clip(np.float32(light_colour(rng)) + clouds + grain, 0, 255).astype(np.uint8)


def _open_stream(
    container: av.container.OutputContainer, codec: str, width: int, height: int, fps: int, gop: int
) -> av.VideoStream:
    stream = container.add_stream(codec, rate=fps, options=dict(ENCODER_OPTIONS.get(codec, {})))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.gop_size = gop
    return stream


def write_shapes_video(
    path: Path,
    seconds: float = 120,
    width: int = 1280,
    height: int = 720,
    fps: int = 30,
    seed: int = 0,
    count: int = 6,
    codec: str = "libx264",
    container: str | None = None,
    gop: int = 60,
) -> GroundTruth:
    """Write ``seconds`` of ``count`` filled shapes moving at constant velocity, bouncing off the borders and
    off each other (the circles around them never meet), and return every frame's boxes and track ids.

    ``container`` is FFmpeg's muxer name (``FORMATS``); None picks it from the suffix. MP4 and MOV keep their
    ``moov`` at the end (FFmpeg's default). ``gop`` is the most frames between two keyframes.
    """
    rng = np.random.default_rng([seed, 2026])
    background = _background(rng, width, height)
    movers = _movers(rng, count, width, height, fps)
    gap = GAP * min(width / REFERENCE_SIZE[0], height / REFERENCE_SIZE[1])
    frames: list[tuple[TruthBox, ...]] = []
    with av.open(str(path), "w", format=container, options=BITEXACT) as output:
        stream = _open_stream(output, codec, width, height, fps, gop)
        for index in range(round(seconds * fps)):
            canvas = background.copy()
            for mover in movers:
                draw_shape(canvas, mover.class_id, (mover.x, mover.y), mover.radius, mover.angle, mover.colour)
            frames.append(tuple(mover.truth() for mover in movers))
            # OpenCV converts to the encoder's YUV 4:2:0 four times as fast as PyAV's swscale.
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(canvas, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            output.mux(stream.encode(frame))
            _step(movers, width, height, gap)
        output.mux(stream.encode(None))
    return GroundTruth(fps, width, height, tuple(frames))


@dataclass(frozen=True)
class _PacketSpan:
    """Where a packet lies in its file, whether it starts a keyframe, and the frame it shows."""

    position: int
    size: int
    keyframe: bool
    frame: int


def _packet_spans(path: Path) -> list[_PacketSpan]:
    """The video packets of ``path`` in decode order, read by the demuxer without decoding."""
    with av.open(str(path)) as source:
        stream = source.streams.video[0]
        rate = stream.average_rate
        return [
            _PacketSpan(packet.pos, packet.size, packet.is_keyframe, round(packet.pts * stream.time_base * rate))
            for packet in source.demux(stream)
            if packet.size and packet.pts is not None
        ]


def corrupt_middle(src: Path, dst: Path, gops: int = 1, seed: int = 0) -> range:
    """Copy ``src`` to ``dst`` with the packets of ``gops`` groups of pictures in its middle overwritten by noise,
    and return the frames (0-based, in display order) they held.

    The demuxer still lists those packets (the container's index is intact) but they do not decode; decoding
    resumes at the next keyframe. x264's groups of pictures are closed, so the lost frames are contiguous.
    """
    spans = _packet_spans(src)
    keyframes = [index for index, span in enumerate(spans) if span.keyframe]
    middle = min(range(1, len(keyframes)), key=lambda k: abs(keyframes[k] - len(spans) // 2), default=None)
    if middle is None or middle + gops >= len(keyframes):
        raise ValueError(f"{src} has too few keyframes ({len(keyframes)}) to lose {gops} in the middle and recover")
    ruined = spans[keyframes[middle] : keyframes[middle + gops]]
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng([seed, 404])
    for span in ruined:
        data[span.position : span.position + span.size] = rng.integers(0, 256, size=span.size, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    lost = sorted(span.frame for span in ruined)
    return range(lost[0], lost[-1] + 1)


def _top_level_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """The top-level boxes (atoms) of an MP4 or MOV file: type, offset and size."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset : offset + 4], "big"), data[offset + 4 : offset + 8]
        if size == 1:  # 64-bit size after the type
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        elif size == 0:  # to the end of the file
            size = len(data) - offset
        boxes.append((kind, offset, size))
        offset += size
    return boxes


def truncated_without_moov(src: Path, dst: Path) -> None:
    """Copy ``src``, an MP4 or MOV with its ``moov`` after the media data, to ``dst`` cut just before the ``moov``:
    an upload that stopped before its end. Nothing in it can be demuxed."""
    data = src.read_bytes()
    offsets = {kind: offset for kind, offset, _size in _top_level_boxes(data)}
    if b"moov" not in offsets or offsets[b"moov"] < offsets.get(b"mdat", len(data)):
        raise ValueError(f"{src} has no moov after its mdat")
    dst.write_bytes(data[: offsets[b"moov"]])


def write_empty_video(path: Path, width: int = 320, height: int = 180, fps: int = 30) -> None:
    """An MP4 with an H.264 video stream and no frame at all.

    Its ``moov`` is written up front (``empty_moov``): a plain MP4 leaves a track without samples out.
    """
    with av.open(str(path), "w", format="mp4", options={"movflags": "empty_moov", **BITEXACT}) as output:
        _open_stream(output, "libx264", width, height, fps, fps)
        output.start_encoding()  # the header: with no packet muxed PyAV would write nothing


def _vp9_keyframe(width: int, height: int) -> bytes:
    """One VP9 keyframe of a blank 64x64 picture whose header declares ``width`` x ``height``."""
    encoder = av.CodecContext.create("libvpx-vp9", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 64, 64, "yuv420p"
    encoder.time_base = Fraction(1, 1)
    encoder.options = dict(ENCODER_OPTIONS["libvpx-vp9"])
    frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="bgr24")
    frame.pts = 0
    packets = encoder.encode(frame) + encoder.encode(None)
    data = bytearray(bytes(packets[0]))
    header = int.from_bytes(data[:VP9_HEADER_BYTES], "big")
    header = header & ~(0xFFFFFFFF << VP9_SIZE_SHIFT) | ((width - 1) << 16 | (height - 1)) << VP9_SIZE_SHIFT
    data[:VP9_HEADER_BYTES] = header.to_bytes(VP9_HEADER_BYTES, "big")
    return bytes(data)


def write_video_bomb(path: Path, width: int = 32768, height: int = 32768) -> None:
    """A Matroska file of a few hundred bytes whose one VP9 frame declares ``width`` x ``height``, in the
    container's header and the frame's own: decoding it would allocate a frame of that size.

    FFmpeg itself holds a 32768x32768 frame invalid (its limit is about 16,000 a side): ``av.open`` reads width
    and height 0 and allocates nothing. A size FFmpeg accepts, such as 16000x16000 (over the service's pixel
    cap), is decoded by ``av.open``'s stream probing itself (about 420 MB), unless it is given
    ``stream_options=[{"max_pixels": ...}]``: then it too reads 0 x 0.
    """
    with av.open(str(path), "w", format="matroska", options=BITEXACT) as output:
        stream = output.add_mux_stream("vp9", rate=1, width=width, height=height)
        stream.time_base = Fraction(1, 1000)
        packet = av.Packet(_vp9_keyframe(width, height))
        packet.pts = packet.dts = 0
        packet.time_base, packet.stream, packet.is_keyframe = Fraction(1, 1000), stream, True
        output.mux(packet)


def declared_size(path: Path) -> tuple[int, int]:
    """The frame size the first VP9 keyframe of ``path`` declares, read from its header without decoding."""
    with av.open(str(path)) as source:
        header = bytes(next(source.demux(source.streams.video[0])))[:VP9_HEADER_BYTES]
    size = int.from_bytes(header, "big") >> VP9_SIZE_SHIFT & 0xFFFFFFFF
    return (size >> 16) + 1, (size & 0xFFFF) + 1

"""What a stored file is, decided once when it is stored: an accepted image, a video FFmpeg decodes, or refused.

Both upload paths (a multipart part, a finished resumable upload) call :func:`identify_file`,
so the decision is made here alone: an image by its magic bytes and header
(:func:`storage.images.identify_image`), anything else by FFmpeg (:func:`probe_video`).
A video's probe is kept with the file (``stored_files.media``, :meth:`VideoInfo.as_json`),
so nothing later has to open the container to plan work on it. The one other thing a file may be is model
weights, a resumable upload an admin declared as such (:class:`WeightsInfo`, checked by
:func:`storage.weights.identify_weights`): no pixels, so no size, and no job takes it.

FFmpeg is reached through PyAV (``av``), chosen because its wheels bundle FFmpeg: no system
package to install or keep in step. The probe decodes nothing before the pixel cap is checked,
and after it only until the first frame comes out:

- the container is opened with every decoder refused (``codec_whitelist``), so opening it reads
  headers only: the frame size is the one they declare, checked against the cap before anything else;
- FFmpeg sees the bytes without a name: it chooses some demuxers by the name's extension (any
  ``.txt`` opens as an ANSI-art video, an ``.m3u8`` playlist opens the files it lists), and no
  protocol is allowed for a file a container names;
- the frames are counted exactly by demuxing the stream's packets (no decode); the first frame
  decoded says how the frames are turned (the display matrix FFmpeg attaches to it: PyAV reads
  no stream side data).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, BinaryIO

import av
from av.container import InputContainer
from av.stream import Disposition
from av.video.stream import VideoStream

from storage.images import HEADER_BYTES, ImageInfo, MediaTooLarge, UnsupportedMedia, format_by_magic, identify_image

NEITHER = "the file is neither an image (JPEG, PNG, WebP, BMP or TIFF) nor a video FFmpeg decodes"
# Opening a container reads its headers only: no decoder may open (find_stream_info would decode frames
# of any size), and no protocol may open a file the container names.
OPEN_OPTIONS = {"codec_whitelist": "none", "protocol_whitelist": "none"}
# The bytes read to tell WebM from Matroska (one demuxer for both): the EBML header that names the DocType.
EBML_HEADER_BYTES = 64
EBML_DOCTYPE_ID = b"\x42\x82"
# A container's name (as resolved by :func:`_container_name`) -> its content type; any other is video/x-<name>.
CONTENT_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "3gp": "video/3gpp",
    "3g2": "video/3gpp2",
    "matroska": "video/x-matroska",
    "webm": "video/webm",
    "avi": "video/x-msvideo",
    "mpegts": "video/mp2t",
    "mpeg": "video/mpeg",
    "ogg": "video/ogg",
    "flv": "video/x-flv",
    "asf": "video/x-ms-asf",
}
# An ISO-BMFF file's major brand (its prefix) -> the container it names; any other brand is MP4's.
BRAND_CONTAINERS = (("qt", "mov"), ("3g2", "3g2"), ("3g", "3gp"))
QUARTER_TURN = 90


@dataclass(frozen=True)
class VideoInfo:
    """A video's probe. ``width`` and ``height`` are the size it is shown at (upright, after ``rotation``);
    ``rotation`` is the degrees clockwise (0, 90, 180 or 270) a decoded frame is turned to be shown upright,
    the sense of the old ``rotate`` tag (PyAV's ``VideoFrame.rotation`` reads the opposite sign);
    ``fps`` the stream's average rate; ``duration`` in seconds; ``frames`` the exact count of its frames."""

    content_type: str
    container: str
    codec: str
    width: int
    height: int
    rotation: int
    fps: float
    duration: float
    frames: int

    def as_json(self) -> dict[str, Any]:
        """The probe as ``stored_files.media`` keeps it."""
        return {
            "kind": "video",
            "container": self.container,
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "rotation": self.rotation,
            "fps": self.fps,
            "duration": self.duration,
            "frames": self.frames,
        }


@dataclass(frozen=True)
class WeightsInfo:
    """Model weights (a ``.pt`` or ``.onnx`` file) an admin sent to register a model: typed as bytes of no media
    type, without width and height (``stored_files.width`` NULL: a job naming the file is refused it)."""

    content_type: str = "application/octet-stream"
    width: None = None
    height: None = None


# What a stored file is: an image (media NULL), a video (its probe in media) or weights (no width).
FileInfo = ImageInfo | VideoInfo | WeightsInfo


def identify_file(stream: BinaryIO, max_pixels: int) -> FileInfo:
    """What the bytes of a seekable ``stream`` are: an image if they start like one, else a video. Raises
    :class:`UnsupportedMedia` for anything else, :class:`MediaTooLarge` for a frame over its cap (an image's
    is :data:`storage.images.MAX_PIXELS`, a video's ``max_pixels``). The stream is left at its start."""
    stream.seek(0)
    if format_by_magic(stream.read(HEADER_BYTES)) is not None:
        return identify_image(stream)
    return probe_video(stream, max_pixels)


def probe_video(stream: BinaryIO, max_pixels: int) -> VideoInfo:
    """The probe of the first video stream in a seekable ``stream``, its frames counted by demuxing.

    :class:`MediaTooLarge` when its frames have more than ``max_pixels`` (from the headers, before
    any packet is read); :class:`UnsupportedMedia` when it is not a container with a video stream
    FFmpeg decodes, or the video has no duration, no frames or cannot be read to its end.
    The stream is left at its start.
    """
    stream.seek(0)
    head = stream.read(EBML_HEADER_BYTES)
    stream.seek(0)
    try:
        with av.open(_Unnamed(stream), container_options=OPEN_OPTIONS) as container:
            return _probe(container, head, max_pixels)
    except av.FFmpegError as exc:
        raise UnsupportedMedia(NEITHER) from exc
    finally:
        stream.seek(0)


@dataclass(frozen=True)
class _Unnamed:
    """The stream as FFmpeg reads it: its bytes alone, without the name a file object would give it."""

    stream: BinaryIO

    def read(self, size: int) -> bytes:
        return self.stream.read(size)

    def seek(self, offset: int, whence: int) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()


def _probe(container: InputContainer, head: bytes, max_pixels: int) -> VideoInfo:
    stream = _video_stream(container)
    codec = stream.codec_context
    width, height = codec.width, codec.height
    if width <= 0 or height <= 0:
        raise UnsupportedMedia("the video's frames have no size")
    if width * height > max_pixels:
        raise MediaTooLarge(f"the video's frames have too many pixels ({width}x{height}; the limit is {max_pixels:,})")
    duration = _duration(container, stream)
    if duration <= 0:
        raise UnsupportedMedia("the video has no duration")
    frames, rotation = _count_frames(container, stream)
    container_name = _container_name(container, head)
    upright = (height, width) if rotation % 180 == QUARTER_TURN else (width, height)
    return VideoInfo(
        content_type=CONTENT_TYPES.get(container_name, f"video/x-{container_name}"),
        container=container_name,
        codec=codec.name,
        width=upright[0],
        height=upright[1],
        rotation=rotation,
        fps=float(stream.average_rate or stream.guessed_rate or Fraction(frames) / Fraction(duration)),
        duration=duration,
        frames=frames,
    )


def _video_stream(container: InputContainer) -> VideoStream:
    """The first video stream that is not a cover picture, with a decoder; UnsupportedMedia if none."""
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic and stream.codec_context is not None:
            return stream
    raise UnsupportedMedia(NEITHER)


def _container_name(container: InputContainer, head: bytes) -> str:
    """The container's short name. FFmpeg has one demuxer for MP4, QuickTime and 3GP (told apart by the
    major brand) and one for Matroska and WebM (told apart by the DocType of the EBML header, ``head``)."""
    demuxer = container.format.name
    if demuxer.startswith("mov,"):
        brand = container.metadata.get("major_brand", "").strip()
        return next((name for prefix, name in BRAND_CONTAINERS if brand.startswith(prefix)), "mp4")
    if demuxer.startswith("matroska,"):
        return "webm" if _ebml_doctype(head) == "webm" else "matroska"
    return demuxer.split(",")[0]


def _ebml_doctype(head: bytes) -> str:
    """The DocType an EBML header names (its one-byte-size form, as muxers write it), or ''."""
    at = head.find(EBML_DOCTYPE_ID)
    if at < 0 or at + 3 > len(head) or not head[at + 2] & 0x80:
        return ""
    length = head[at + 2] & 0x7F
    return head[at + 3 : at + 3 + length].decode("ascii", "replace")


def _duration(container: InputContainer, stream: VideoStream) -> float:
    """Seconds: the stream's duration, else the container's (0 when neither says)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else 0.0


def _count_frames(container: InputContainer, stream: VideoStream) -> tuple[int, int]:
    """The stream's frames (its packets with a timestamp and bytes, demuxed, not decoded) and its rotation
    (:attr:`VideoInfo.rotation`, from the first frame decoded); UnsupportedMedia if there is no frame or
    none decodes."""
    frames = 0
    first: av.VideoFrame | None = None
    try:
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            frames += 1
            if first is None:
                first = _first_frame(stream, packet)
    except av.FFmpegError as exc:
        raise UnsupportedMedia(f"the video cannot be read to its end (after {frames} frames)") from exc
    if frames == 0:
        raise UnsupportedMedia("the video has no frames")
    if first is None:
        first = _first_frame(stream, None)  # a decoder that holds frames back gives them up when flushed
    if first is None:
        raise UnsupportedMedia("FFmpeg decodes none of the video's frames")
    return frames, round(-first.rotation / QUARTER_TURN) * QUARTER_TURN % 360


def _first_frame(stream: VideoStream, packet: av.Packet | None) -> av.VideoFrame | None:
    """The first frame decoding ``packet`` gives (None to flush the decoder), if any."""
    try:
        return next(iter(stream.codec_context.decode(packet)), None)
    except av.FFmpegError:  # a packet that does not decode: a later one may
        return None

"""What a stored file is: videos of each common container probed (display size, rotation, rate, duration, the exact
frame count), images left to their header, and what is neither, cut short, empty or too large refused.

Every video is made here with PyAV (the library the probe reads them with), a few dozen frames of 64x48.
"""

from __future__ import annotations

import hashlib
import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from harness.images import image_bytes
from storage.images import MAX_PIXELS, ImageInfo, MediaTooLarge, UnsupportedMedia
from storage.media import NEITHER, VideoInfo, identify_file, probe_video

WIDTH, HEIGHT = 64, 48
RATE = 24


def video_bytes(
    container: str = "mp4",
    codec: str = "libx264",
    frames: int = 12,
    rotation: float | None = None,
    size: tuple[int, int] = (WIDTH, HEIGHT),
) -> bytes:
    """A video of ``frames`` grey frames growing lighter, muxed as ``container`` (an FFmpeg muxer name);
    ``rotation`` is the display matrix's, in degrees counter-clockwise (PyAV's sense)."""
    out = io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=RATE)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index in range(frames):
            pixels = np.full((size[1], size[0], 3), index * 255 // max(frames, 1), dtype=np.uint8)
            muxer.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        muxer.mux(stream.encode())
    return out.getvalue()


def padded_image(size: int, seed: int = 0) -> bytes:
    """A 40x30 PNG followed by pseudo-random bytes up to ``size``: an image by its header (all that identifies a
    stored file), any bytes behind it. For tests of how bytes travel, not of what they show."""
    png = image_bytes(40, 30, seed=seed)
    return png + hashlib.shake_256(seed.to_bytes(4, "big")).digest(size - len(png))


def video_claiming(width: int, height: int) -> bytes:
    """A Matroska file whose header declares raw grey frames of ``width`` x ``height`` (at most 16000x16000:
    FFmpeg's encoders open at no larger) and whose one packet is 64 bytes: decoded, it would fail."""
    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as muxer:
        stream = muxer.add_stream("rawvideo", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = width, height, "gray"
        packet = av.Packet(bytes(64))
        packet.stream, packet.pts, packet.dts, packet.time_base = stream, 0, 0, Fraction(1, RATE)
        muxer.mux(packet)
    return out.getvalue()


def probed(data: bytes, max_pixels: int = MAX_PIXELS) -> VideoInfo:
    return probe_video(io.BytesIO(data), max_pixels)


@pytest.mark.parametrize(
    ("container", "codec", "content_type", "name", "decoder"),
    [
        ("mp4", "libx264", "video/mp4", "mp4", "h264"),
        ("matroska", "libx264", "video/x-matroska", "matroska", "h264"),
        ("webm", "libvpx-vp9", "video/webm", "webm", "vp9"),
        ("mov", "libx264", "video/quicktime", "mov", "h264"),
    ],
)
def test_a_video_of_each_container_is_probed_whole(
    container: str, codec: str, content_type: str, name: str, decoder: str
) -> None:
    info = probed(video_bytes(container, codec, frames=12))
    assert info == VideoInfo(content_type, name, decoder, WIDTH, HEIGHT, 0, float(RATE), info.duration, 12)
    assert info.duration == pytest.approx(12 / RATE, abs=1 / RATE)
    assert info.as_json() == {
        "kind": "video",
        "container": name,
        "codec": decoder,
        "width": WIDTH,
        "height": HEIGHT,
        "rotation": 0,
        "fps": float(RATE),
        "duration": info.duration,
        "frames": 12,
    }


@pytest.mark.parametrize("container", ["mp4", "matroska"])
def test_frames_are_counted_exactly_with_b_frames_and_no_count_in_the_header(container: str) -> None:
    data = video_bytes(container, frames=37)  # x264's defaults reorder frames (B-frames)
    with av.open(io.BytesIO(data)) as reread:
        declared = reread.streams.video[0].frames
    assert probed(data).frames == 37
    assert declared in (0, 37), "Matroska declares no count: the probe counts packets"


@pytest.mark.parametrize(("counter_clockwise", "clockwise"), [(90, 270), (-90, 90), (180, 180)])
def test_a_rotated_video_says_its_turn_and_its_upright_size(counter_clockwise: int, clockwise: int) -> None:
    info = probed(video_bytes("mp4", rotation=counter_clockwise))
    assert info.rotation == clockwise
    upright = (HEIGHT, WIDTH) if clockwise % 180 else (WIDTH, HEIGHT)
    assert (info.width, info.height) == upright


def test_identify_file_takes_an_image_by_its_header_and_anything_else_to_ffmpeg(tmp_path: Path) -> None:
    image, video = tmp_path / "a.png", tmp_path / "a.mp4"
    image.write_bytes(image_bytes(40, 30, seed=1))
    video.write_bytes(video_bytes())
    with image.open("rb") as stream:
        assert identify_file(stream, max_pixels=1) == ImageInfo("image/png", 40, 30), "the video cap is not an image's"
        assert stream.tell() == 0
    with video.open("rb") as stream:
        found = identify_file(stream, MAX_PIXELS)
        assert isinstance(found, VideoInfo) and (found.content_type, found.frames) == ("video/mp4", 12)
        assert stream.tell() == 0


@pytest.mark.parametrize("name", ["notes.txt", "list.m3u8", "notes"])
def test_text_is_neither_whatever_its_name(tmp_path: Path, name: str) -> None:
    """FFmpeg opens any ``.txt`` as an ANSI-art video and an ``.m3u8`` as a playlist: the probe never gives it
    the name."""
    path = tmp_path / name
    path.write_text("#EXTM3U\n#EXTINF:1,\nfile:///etc/hostname\n" if name.endswith("m3u8") else "plain text\n" * 50)
    with path.open("rb") as stream, pytest.raises(UnsupportedMedia, match="neither an image") as refused:
        identify_file(stream, MAX_PIXELS)
    assert str(refused.value) == NEITHER


def test_an_mp4_cut_before_its_index_is_refused(tmp_path: Path) -> None:
    whole = video_bytes("mp4", frames=24)
    assert whole.rfind(b"moov") > whole.find(b"mdat"), "the muxer writes the index (moov) last"
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    with cut.open("rb") as stream, pytest.raises(UnsupportedMedia):
        probe_video(stream, MAX_PIXELS)


def test_a_video_track_with_no_frame_is_refused() -> None:
    """A second of sound beside a video track that holds no packet: the container has a duration, the video no
    frame. (A file with nothing but an empty video track does not open at all.)"""
    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as muxer:
        video = muxer.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        sound = muxer.add_stream("pcm_s16le", rate=8000, layout="mono")
        for second_tenth in range(10):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
            samples.sample_rate, samples.pts = 8000, second_tenth * 800
            muxer.mux(sound.encode(samples))
        muxer.mux(sound.encode())
    with pytest.raises(UnsupportedMedia, match="the video has no frames"):
        probed(out.getvalue())


def test_a_header_declaring_a_huge_frame_is_refused_before_anything_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "huge.mkv"
    path.write_bytes(video_claiming(16000, 16000))
    with path.open("rb") as stream, pytest.raises(MediaTooLarge, match=r"\(16000x16000; the limit is 178,956,970\)"):
        identify_file(stream, MAX_PIXELS)


def test_the_pixel_cap_is_the_callers() -> None:
    data = video_bytes()
    assert probed(data, max_pixels=WIDTH * HEIGHT).frames == 12
    with pytest.raises(MediaTooLarge, match="too many pixels"):
        probed(data, max_pixels=WIDTH * HEIGHT - 1)


def test_a_refusal_names_the_file_in_a_sentence() -> None:
    refused = UnsupportedMedia(NEITHER).naming("notes.txt")
    assert isinstance(refused, UnsupportedMedia) and str(refused) == f"notes.txt: {NEITHER}."

"""Listing and decoding one segment's sampled frames: every frame once, resume, corruption counted, refusals.

The small videos are written here with PyAV. Each frame is grey, with a red mark in its top-left corner
and two darker or lighter quarters at the bottom whose levels say its index, 16 levels apart so that neither
compression nor the round trip through YUV (a few levels) mistakes a frame for another.
"""

from __future__ import annotations

import math
import random
import wave
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from video.frames import Frame, FrameRef, FrameTooLarge, NotDecodable, SegmentReader
from video.sampling import Window

MILLISECONDS = Fraction(1, 1000)
SIZE = (64, 48)  # width, height
CFR_TIMES = [index * 40 for index in range(150)]  # 25 fps for 6 s

# The workers' default cap on a frame's pixels (WORKER_MAX_IMAGE_PIXELS).
CAP = 178_956_970


BACKGROUND = 128


def index_levels(index: int) -> tuple[int, int]:
    """The grey levels of the bottom-left and bottom-right quarters of the frame at ``index`` (up to 168)."""
    return 24 + 16 * (index // 13), 24 + 16 * (index % 13)


def picture(index: int) -> np.ndarray:
    width, height = SIZE
    pixels = np.full((height, width, 3), BACKGROUND, np.uint8)
    pixels[: height // 4, : width // 4] = (0, 0, 255)  # BGR red
    pixels[height // 2 :, : width // 2], pixels[height // 2 :, width // 2 :] = index_levels(index)
    return pixels


def vfr_times(count: int, seed: int) -> list[int]:
    """Irregular frame times in ms: bursts of short gaps and long pauses."""
    rng = random.Random(seed)
    times = [0]
    for _ in range(count - 1):
        times.append(times[-1] + rng.choice([5, 10, 17, 33, 40, 100, 250, 600]))
    return times


def write_video(
    path: Path, times_ms: Sequence[int], *, codec: str = "libx264", rotation: int = 0, zeroed: Collection[int] = ()
) -> None:
    """A video of one frame per time (ms); libx264 with B-frames, short GOPs and a fine quantiser, or MJPEG.

    ``zeroed``: the times whose packets are written as zero bytes, which the decoder refuses.
    """
    options = {"bf": "2", "g": "12", "crf": "12"} if codec == "libx264" else {}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25, options=options)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.codec_context.time_base = MILLISECONDS
        if rotation:
            stream.set_display_rotation(rotation)
        for index, time_ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(picture(index), format="bgr24")
            frame.pts, frame.time_base = time_ms, MILLISECONDS
            for packet in stream.encode(frame):
                container.mux(zero(packet) if packet.pts in zeroed else packet)
        for packet in stream.encode():
            container.mux(packet)


def zero(packet: av.Packet) -> av.Packet:
    zeroed = av.Packet(bytes(packet.size))
    zeroed.pts, zeroed.dts, zeroed.time_base, zeroed.stream = packet.pts, packet.dts, packet.time_base, packet.stream
    zeroed.is_keyframe = packet.is_keyframe
    return zeroed


@dataclass(frozen=True)
class Videos:
    cfr: Path
    cfr_matroska: Path
    vfr: Path
    rotated: Path
    mjpeg_zeroed: Path
    mjpeg_scattered: Path


VFR_TIMES = vfr_times(120, seed=26)
ZEROED = [index * 40 for index in range(20, 25)]
SCATTERED = [index * 40 for index in (2, 5, 8, 11, 14, 17, 20, 21)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Videos:
    folder = tmp_path_factory.mktemp("videos")
    made = Videos(
        cfr=folder / "cfr.mp4",
        cfr_matroska=folder / "cfr.mkv",
        vfr=folder / "vfr.mp4",
        rotated=folder / "rotated.mp4",
        mjpeg_zeroed=folder / "zeroed.mkv",
        mjpeg_scattered=folder / "scattered.mkv",
    )
    write_video(made.cfr, CFR_TIMES)
    write_video(made.cfr_matroska, CFR_TIMES)
    write_video(made.vfr, VFR_TIMES)
    write_video(made.rotated, CFR_TIMES[:5], rotation=90)
    write_video(made.mjpeg_zeroed, CFR_TIMES[:50], codec="mjpeg", zeroed=ZEROED)
    write_video(made.mjpeg_scattered, CFR_TIMES[:50], codec="mjpeg", zeroed=SCATTERED)
    return made


def whole_video(times_ms: Sequence[int], fps: float | None = None, segment_seconds: float = 1.0) -> Window:
    return Window(start=0.0, end=times_ms[-1] / 1000 + 0.001, fps=fps, segment_seconds=segment_seconds)


@dataclass(frozen=True)
class SegmentRead:
    listed: list[FrameRef]
    frames: list[Frame]
    missing: list[FrameRef]
    error: str | None


def read_segment(path: Path, window: Window, segment: int, done: Collection[int] = ()) -> SegmentRead:
    with SegmentReader(path, window, segment, done, max_pixels=CAP) as reader:
        listed = reader.listed()
        frames = list(reader.frames())
        return SegmentRead(listed, frames, reader.missing(), reader.error)


def read_all(path: Path, window: Window) -> list[SegmentRead]:
    return [read_segment(path, window, segment) for segment in range(window.segment_count)]


def first_of_each_slot(times_ms: Sequence[int], fps: float) -> list[int]:
    """The indices sampling at ``fps`` picks from the whole video at once."""
    first: dict[int, int] = {}
    for index, time_ms in enumerate(times_ms):
        first.setdefault(math.floor(time_ms / 1000 * fps + 1e-9), index)
    return list(first.values())


def assert_shows(frame: Frame, index: int) -> None:
    """The frame's pixels are those of the frame written at ``index``: the levels of its bottom quarters."""
    height, width = frame.pixels.shape[:2]
    assert frame.pixels.dtype == np.uint8
    rows = frame.pixels[height * 5 // 8 : height * 7 // 8]  # inside the quarters, away from their blurred edges
    left, right = rows[:, width // 16 : width * 7 // 16], rows[:, width * 9 // 16 : width * 15 // 16]
    assert [float(left.mean()), float(right.mean())] == pytest.approx(index_levels(index), abs=6)


def assert_each_sampled_frame_once(reads: list[SegmentRead], times_ms: Sequence[int], indices: list[int]) -> None:
    yielded = [frame for read in reads for frame in read.frames]
    assert [frame.ref.time for frame in yielded] == pytest.approx([times_ms[index] / 1000 for index in indices])
    assert len({frame.ref.pts for frame in yielded}) == len(indices)
    for frame, index in zip(yielded, indices, strict=True):
        assert_shows(frame, index)
    assert all(read.missing == [] and read.error is None for read in reads)


@pytest.mark.parametrize("name", ["cfr", "cfr_matroska", "vfr"])
def test_every_frame_is_decoded_by_exactly_one_segment(videos: Videos, name: str) -> None:
    times_ms = VFR_TIMES if name == "vfr" else CFR_TIMES
    reads = read_all(getattr(videos, name), whole_video(times_ms, segment_seconds=0.7))
    assert len(reads) > 5
    assert_each_sampled_frame_once(reads, times_ms, list(range(len(times_ms))))


@pytest.mark.parametrize(("name", "fps"), [("cfr", 7.0), ("cfr", 0.5), ("vfr", 3.0), ("vfr", 30.0)])
def test_sampling_at_a_rate_decodes_the_first_frame_of_each_slot_once(videos: Videos, name: str, fps: float) -> None:
    times_ms = CFR_TIMES if name == "cfr" else VFR_TIMES
    reads = read_all(getattr(videos, name), whole_video(times_ms, fps=fps))
    assert_each_sampled_frame_once(reads, times_ms, first_of_each_slot(times_ms, fps))


def test_a_seek_that_lands_after_the_segment_start_is_retried_further_back(
    videos: Videos, monkeypatch: pytest.MonkeyPatch
) -> None:
    seek = SegmentReader._seek

    def seek_late(reader: SegmentReader, time: float) -> None:
        seek(reader, time + 1.2 if time > 0 else time)  # past the keyframe before `time`: GOPs last 0.48 s

    monkeypatch.setattr(SegmentReader, "_seek", seek_late)
    reads = read_all(videos.cfr, whole_video(CFR_TIMES))
    assert_each_sampled_frame_once(reads, CFR_TIMES, list(range(len(CFR_TIMES))))


def test_a_window_inside_the_video_decodes_only_its_frames(videos: Videos) -> None:
    reads = read_all(videos.cfr, Window(start=1.3, end=4.1, fps=None, segment_seconds=1.0))
    assert [len(read.frames) for read in reads] == [25, 25, 20]
    assert_each_sampled_frame_once(reads, CFR_TIMES, list(range(33, 103)))


def test_frames_are_numbered_at_the_nominal_rate(videos: Videos) -> None:
    listed = read_segment(videos.cfr, whole_video(CFR_TIMES), 2).listed
    assert [ref.frame for ref in listed] == list(range(50, 75))
    assert [ref.time for ref in listed] == pytest.approx([frame / 25 for frame in range(50, 75)])


def test_a_resumed_segment_decodes_only_the_frames_not_done(videos: Videos) -> None:
    window = whole_video(CFR_TIMES)
    listed = read_segment(videos.cfr, window, 3).listed
    done = {ref.pts for ref in listed[:10]} | {listed[17].pts}
    read = read_segment(videos.cfr, window, 3, done=done)
    assert [frame.ref for frame in read.frames] == [ref for ref in listed if ref.pts not in done]
    assert read.missing == []
    assert read.error is None


def test_a_segment_all_done_decodes_nothing(videos: Videos) -> None:
    window = whole_video(CFR_TIMES)
    listed = read_segment(videos.cfr, window, 1).listed
    read = read_segment(videos.cfr, window, 1, done={ref.pts for ref in listed})
    assert (read.frames, read.missing) == ([], [])


def test_frames_are_turned_upright(videos: Videos) -> None:
    frames = read_segment(videos.rotated, whole_video(CFR_TIMES[:5]), 0).frames
    assert len(frames) == 5
    pixels = frames[0].pixels
    width, height = SIZE
    assert pixels.shape == (width, height, 3)
    # Turned a quarter counter-clockwise: the stored top-left corner is now the bottom-left one.
    assert pixels[-2, 1].tolist() == pytest.approx([0, 0, 255], abs=40)
    assert pixels[1, 1].tolist() == pytest.approx([BACKGROUND] * 3, abs=40)
    assert pixels.flags.c_contiguous


def test_undecodable_packets_are_missing_frames_named_by_range(videos: Videos) -> None:
    reads = read_all(videos.mjpeg_zeroed, whole_video(CFR_TIMES[:50]))
    assert [ref.frame for ref in reads[0].missing] == [20, 21, 22, 23, 24]
    assert reads[0].error == "frames 20-24 could not be decoded (5 frames)"
    assert [frame.ref.frame for frame in reads[0].frames] == list(range(20))
    assert (len(reads[1].frames), reads[1].missing, reads[1].error) == (25, [], None)


def test_an_error_names_a_few_ranges_and_counts_the_rest(videos: Videos) -> None:
    read = read_segment(videos.mjpeg_scattered, whole_video(CFR_TIMES[:50]), 0)
    assert len(read.missing) == 8
    assert read.error == (
        "frame 2 could not be decoded (1 frame); frame 5 could not be decoded (1 frame); "
        "frame 8 could not be decoded (1 frame); frame 11 could not be decoded (1 frame); "
        "frame 14 could not be decoded (1 frame); 3 more frames in 2 more ranges could not be decoded"
    )


def test_a_corrupt_stretch_of_h264_loses_only_frames_that_are_counted(videos: Videos, tmp_path: Path) -> None:
    data = bytearray(videos.cfr.read_bytes())
    media_data = data.index(b"mdat") + 4
    middle = media_data + (data.index(b"moov") - media_data) // 2
    data[middle : middle + 1500] = random.Random(26).randbytes(1500)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(data)
    reads = read_all(corrupt, whole_video(CFR_TIMES))
    listed = [ref.pts for read in reads for ref in read.listed]
    analysed = [frame.ref.pts for read in reads for frame in read.frames]
    missing = [ref.pts for read in reads for ref in read.missing]
    assert len(listed) == len(CFR_TIMES)
    assert sorted(analysed + missing) == listed
    assert 0 < len(missing) < len(listed) // 2
    assert all((read.error is None) == (read.missing == []) for read in reads)


def test_missing_frames_are_known_only_once_decoding_ended(videos: Videos) -> None:
    with SegmentReader(videos.cfr, whole_video(CFR_TIMES), 0, max_pixels=CAP) as reader:
        frames = reader.frames()
        next(frames)
        with pytest.raises(RuntimeError, match="iterated to its end"):
            reader.missing()


def test_an_mp4_cut_before_its_index_is_not_decodable(videos: Videos, tmp_path: Path) -> None:
    data = videos.cfr.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: data.index(b"moov") - 4])
    with (
        pytest.raises(NotDecodable, match="does not open as a video"),
        SegmentReader(truncated, whole_video(CFR_TIMES), 0, max_pixels=CAP),
    ):
        pass


def test_a_file_without_video_is_not_decodable(tmp_path: Path) -> None:
    sound = tmp_path / "sound.wav"
    with wave.open(str(sound), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(bytes(16000))
    with (
        pytest.raises(NotDecodable, match="no video stream"),
        SegmentReader(sound, whole_video(CFR_TIMES), 0, max_pixels=CAP),
    ):
        pass


def test_a_missing_file_is_not_blamed_on_the_video(tmp_path: Path) -> None:
    with (
        pytest.raises(FileNotFoundError),
        SegmentReader(tmp_path / "gone.mp4", whole_video(CFR_TIMES), 0, max_pixels=CAP),
    ):
        pass


def test_frames_over_the_pixel_cap_are_refused_before_decoding(videos: Videos) -> None:
    width, height = SIZE
    with (
        pytest.raises(FrameTooLarge, match="64x48"),
        SegmentReader(videos.cfr, whole_video(CFR_TIMES), 0, max_pixels=width * height - 1),
    ):
        pass
    with SegmentReader(videos.cfr, whole_video(CFR_TIMES), 0, max_pixels=width * height) as reader:
        assert len(list(reader.frames())) == 25


def test_a_segment_outside_the_window_is_refused(videos: Videos) -> None:
    with pytest.raises(ValueError, match="6 segments"):
        SegmentReader(videos.cfr, whole_video(CFR_TIMES), 6, max_pixels=CAP)

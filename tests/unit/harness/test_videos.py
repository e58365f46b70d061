"""The generated test videos: frames and ground truth agree, every format decodes, and the faulty files fail as
promised (a corrupt stretch that decoding skips, no ``moov``, no frames, a declared size past FFmpeg's limit)."""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import av
import motmetrics
import numpy as np
import pytest

from evaluation.matching import iou
from harness.videos import (
    FORMATS,
    GroundTruth,
    TruthBox,
    VideoFormat,
    corrupt_middle,
    declared_size,
    truncated_without_moov,
    write_empty_video,
    write_shapes_video,
    write_video_bomb,
)

WIDTH, HEIGHT, FPS, SECONDS, COUNT = 320, 180, 30, 2, 3
PIXEL_CAP = 178_956_970  # settings.worker.max_image_pixels


@dataclass(frozen=True)
class Sample:
    path: Path
    truth: GroundTruth


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """Two seconds at 320x180 with a keyframe every 15 frames: four groups of pictures."""
    path = tmp_path_factory.mktemp("videos") / "shapes.mp4"
    truth = write_shapes_video(path, SECONDS, WIDTH, HEIGHT, FPS, seed=3, count=COUNT, gop=15)
    return Sample(path, truth)


def _decoded(path: Path) -> list[tuple[int, np.ndarray]]:
    """Each frame that decodes, as (frame index, BGR pixels); packets that do not decode are skipped."""
    frames = []
    with av.open(str(path)) as source:
        stream = source.streams.video[0]
        for packet in source.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:
                continue
            frames += [(round(f.pts * stream.time_base * FPS), f.to_ndarray(format="bgr24")) for f in decoded]
    return frames


def _box(box: TruthBox) -> tuple[float, float, float, float]:
    return box.x1, box.y1, box.x2, box.y2


def test_every_frame_is_in_the_file_and_the_truth(sample: Sample) -> None:
    with av.open(str(sample.path)) as source:
        stream = source.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (stream.width, stream.height, stream.average_rate) == (WIDTH, HEIGHT, FPS)
        assert stream.frames == SECONDS * FPS
    assert [index for index, _pixels in _decoded(sample.path)] == list(range(SECONDS * FPS))
    assert len(sample.truth.frames) == SECONDS * FPS and sample.truth.duration == SECONDS


def test_b_frames_make_decode_order_differ_from_display_order(sample: Sample) -> None:
    with av.open(str(sample.path)) as source:
        shown = [packet.pts for packet in source.demux(video=0) if packet.size]
    assert shown != sorted(shown)


def test_tracks_are_continuous_inside_the_frame_and_apart(sample: Sample) -> None:
    first = sample.truth.frames[0]
    assert [box.track_id for box in first] == list(range(1, COUNT + 1))
    for before, after in itertools.pairwise(sample.truth.frames):
        assert [(b.track_id, b.class_id) for b in after] == [(b.track_id, b.class_id) for b in before]
        for a, b in zip(before, after, strict=True):
            assert math.hypot(b.x1 - a.x1, b.y1 - a.y1) < 10  # at most 240 * 0.25 / 30 px a frame, plus a bounce
    steps = [
        [(b.x1 - a.x1, b.y1 - a.y1) for a, b in zip(before, after, strict=True)]
        for before, after in itertools.pairwise(sample.truth.frames)
    ]
    for track in range(COUNT):  # constant velocity but for the few steps with a bounce
        same = [np.allclose(s[track], t[track], atol=1e-6) for s, t in itertools.pairwise(steps)]
        assert sum(same) >= 0.8 * len(same)
    for frame in sample.truth.frames:
        assert all(0 <= box.x1 < box.x2 <= WIDTH and 0 <= box.y1 < box.y2 <= HEIGHT for box in frame)
        assert all(iou(_box(a), _box(b)) < 0.1 for a, b in itertools.combinations(frame, 2))


def test_shapes_are_drawn_where_the_truth_says(sample: Sample) -> None:
    """Dark shapes on a light background: each box's centre is dark, a point outside every box is light."""
    for index, pixels in _decoded(sample.path)[::10]:
        boxes = sample.truth.frames[index]
        for box in boxes:
            assert pixels[round((box.y1 + box.y2) / 2), round((box.x1 + box.x2) / 2)].max() < 140
        grid = itertools.product(range(5, HEIGHT, 10), range(5, WIDTH, 10))
        outside = [
            (y, x) for y, x in grid if not any(b.x1 - 2 <= x <= b.x2 + 2 and b.y1 - 2 <= y <= b.y2 + 2 for b in boxes)
        ]
        assert min(pixels[y, x].min() for y, x in outside) > 140


def test_a_seed_gives_the_same_bytes_and_another_seed_other_tracks(tmp_path: Path) -> None:
    paths = [tmp_path / "a.mkv", tmp_path / "b.mkv", tmp_path / "c.mkv"]
    truths = [write_shapes_video(p, 0.5, WIDTH, HEIGHT, seed=s) for p, s in zip(paths, (7, 7, 8), strict=True)]
    assert truths[0] == truths[1] and truths[0] != truths[2]
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert digests[0] == digests[1] != digests[2]


def test_too_many_shapes_for_the_frame_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        write_shapes_video(tmp_path / "crowded.mp4", 0.1, 160, 90, count=200)


@pytest.mark.parametrize("video_format", FORMATS, ids=lambda f: f"{f.container}-{f.codec}")
def test_each_format_holds_every_frame(tmp_path: Path, video_format: VideoFormat) -> None:
    path = tmp_path / f"shapes{video_format.suffix}"
    truth = write_shapes_video(
        path, 1, WIDTH, HEIGHT, count=2, codec=video_format.codec, container=video_format.container
    )
    with av.open(str(path)) as source:
        assert video_format.container in source.format.name.split(",")
        stream = source.streams.video[0]
        assert stream.codec_context.name == {"libx264": "h264", "libvpx-vp9": "vp9"}[video_format.codec]
        assert len(list(source.decode(stream))) == len(truth.frames) == FPS


def test_frames_at_follows_the_sampling_rule(sample: Sample) -> None:
    truth = sample.truth
    assert truth.frames_at() == list(range(60))
    assert truth.frames_at(10) == list(range(0, 60, 3))  # 3/30 * 10 lands on 1 only within the 1e-9 allowance
    assert truth.frames_at(60) == list(range(60))  # faster than the video: every frame, once
    # Slots of 1/7 s from 0.5 s; the first frame of each (frame i at i/30 s), up to 1.5 s excluded.
    assert truth.frames_at(7, start=0.5, end=1.5) == [15, 20, 24, 28, 33, 37, 41]
    assert truth.frames_at(start=1.9) == [57, 58, 59]


# motmetrics' MOT reader subtracts a tuple from a DataFrame, which pandas deprecates; nothing here can change it.
@pytest.mark.filterwarnings("ignore:Operation with tuple is deprecated")
def test_mot_file_lists_the_chosen_frames_one_based(sample: Sample, tmp_path: Path) -> None:
    path = tmp_path / "gt.txt"
    sample.truth.to_mot(path, frames=[0, 30])
    lines = path.read_text().splitlines()
    assert len(lines) == 2 * COUNT
    assert all(re.fullmatch(r"(1|31),[1-3],[\d.]+,[\d.]+,[\d.]+,[\d.]+,1,-1,-1,-1", line) for line in lines)
    first = sample.truth.frames[0][0]
    assert (
        lines[0] == f"1,1,{first.x1:.2f},{first.y1:.2f},{first.x2 - first.x1:.2f},{first.y2 - first.y1:.2f},1,-1,-1,-1"
    )
    table = motmetrics.io.loadtxt(str(path), fmt="mot15-2D")
    assert sorted(set(table.index.get_level_values("FrameId"))) == [1, 31]


def test_corrupt_middle_loses_a_stretch_and_decoding_resumes_after_it(sample: Sample, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.mp4"
    lost = corrupt_middle(sample.path, damaged)
    assert lost.start > 0 and lost.stop < SECONDS * FPS and len(lost) >= 1
    with av.open(str(damaged)) as source:
        assert source.streams.video[0].frames == SECONDS * FPS  # the demuxer still lists every packet
    decoded = [index for index, _pixels in _decoded(damaged)]
    assert decoded == [index for index in range(SECONDS * FPS) if index not in lost]


def test_corrupt_middle_needs_a_keyframe_after_the_stretch(tmp_path: Path) -> None:
    one_gop = tmp_path / "one.mp4"
    write_shapes_video(one_gop, 0.5, WIDTH, HEIGHT, count=1, gop=60)
    with pytest.raises(ValueError, match="too few keyframes"):
        corrupt_middle(one_gop, tmp_path / "damaged.mp4")


def test_truncated_file_without_moov_cannot_be_opened(sample: Sample, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.mp4"
    truncated_without_moov(sample.path, truncated)
    assert sample.path.read_bytes().startswith(truncated.read_bytes())
    assert truncated.stat().st_size > sample.path.stat().st_size // 2  # the media data is all there
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(truncated))


def test_empty_video_has_a_stream_and_no_frame(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    write_empty_video(path)
    with av.open(str(path)) as source:
        stream = source.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height, stream.frames) == ("h264", 320, 180, 0)
        assert list(source.decode(stream)) == []


def test_bomb_is_tiny_and_declares_32768_square_which_ffmpeg_refuses_unopened(tmp_path: Path) -> None:
    path = tmp_path / "bomb.mkv"
    write_video_bomb(path)
    assert path.stat().st_size < 100_000
    assert declared_size(path) == (32768, 32768)
    with av.open(str(path)) as source:  # FFmpeg holds the size invalid: it reads 0 and allocates nothing
        assert source.streams.video[0].codec_context.width == 0


def test_a_bomb_within_ffmpegs_limits_is_refused_by_max_pixels(tmp_path: Path) -> None:
    path = tmp_path / "bomb.mkv"
    write_video_bomb(path, 16000, 12000)
    assert declared_size(path) == (16000, 12000) and PIXEL_CAP < 16000 * 12000
    with av.open(str(path), stream_options=[{"max_pixels": str(PIXEL_CAP)}]) as source:
        assert source.streams.video[0].codec_context.width == 0

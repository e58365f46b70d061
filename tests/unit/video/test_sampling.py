"""The one sampling rule: slots, segments and the frames each segment samples, from frame times alone."""

from __future__ import annotations

import random

import pytest

from video.sampling import Window, sampled, window_of


def every_frame(start: float = 0.0, end: float = 25.0, segment_seconds: float = 10.0) -> Window:
    return Window(start=start, end=end, fps=None, segment_seconds=segment_seconds)


@pytest.mark.parametrize(
    ("fps", "segment_seconds", "expected"),
    [
        (None, 10.0, 10.0),
        (3.0, 10.0, 10.0),
        (0.3, 10.0, 10.0),
        (0.07, 10.0, 1 / 0.07),
        (7.0, 0.1, 1 / 7),
        (4.0, 1.1, 1.0),
    ],
)
def test_a_segment_is_whole_slots(fps: float | None, segment_seconds: float, expected: float) -> None:
    window = Window(start=0.0, end=100.0, fps=fps, segment_seconds=segment_seconds)
    assert window.segment_length == pytest.approx(expected)


def test_segments_cover_the_window_and_the_last_ends_at_its_end() -> None:
    assert every_frame(start=2.0, end=25.0).segments() == [(2.0, 12.0), (12.0, 22.0), (22.0, 25.0)]
    assert every_frame(end=20.0).segments() == [(0.0, 10.0), (10.0, 20.0)]
    assert every_frame(end=0.5).segments() == [(0.0, 0.5)]
    assert every_frame(start=3.0, end=3.0).segments() == []


def test_a_window_sliced_in_thirds_does_not_grow_a_sliver_segment() -> None:
    window = every_frame(end=1.1, segment_seconds=0.1)  # 1.1 / 0.1 == 11.000000000000002
    assert window.segment_count == 11
    assert window.segments()[-1] == (pytest.approx(1.0), 1.1)
    assert window.segment_of(1.0999999999) == 10


def test_a_frame_on_a_segment_edge_belongs_to_the_later_segment_only() -> None:
    window = every_frame(start=2.5)
    assert [window.segment_of(t) for t in (2.5, 12.499999, 12.5, 22.5, 24.999)] == [0, 0, 1, 2, 2]


def test_frames_outside_the_window_belong_to_no_segment() -> None:
    window = every_frame(start=2.5)
    assert [window.segment_of(t) for t in (0.0, 2.49, 25.0, 30.0)] == [None, None, None, None]


@pytest.mark.parametrize("fps", [29.97, 30.0, 7.0, 0.5, 1 / 3])
def test_a_frame_exactly_on_a_slot_edge_starts_that_slot(fps: float) -> None:
    window = Window(start=1.3, end=10_000.0, fps=fps, segment_seconds=10.0)
    assert [window.slot_of(1.3 + k / fps) for k in range(600)] == list(range(600))


def test_slots_need_a_sampling_rate() -> None:
    with pytest.raises(ValueError, match="no slots"):
        every_frame().slot_of(1.0)


def test_with_fps_a_segment_samples_the_first_frame_of_each_slot_of_vfr_frames() -> None:
    times = [0.0, 0.01, 0.02, 0.5, 0.51, 1.3, 1.31, 2.0, 4.5, 4.9, 5.0]
    window = Window(start=0.0, end=6.0, fps=1.0, segment_seconds=3.0)  # slots of 1 s, segments of 3 slots
    assert sampled(times, window, 0) == [0, 5, 7]
    assert sampled(times, window, 1) == [8, 10]


def test_without_fps_a_segment_samples_every_frame_it_owns() -> None:
    times = [0.0, 0.04, 9.96, 10.0, 10.04, 24.96]
    window = every_frame()
    assert [sampled(times, window, segment) for segment in range(3)] == [[0, 1, 2], [3, 4], [5]]


def test_a_slot_without_frames_samples_nothing() -> None:
    window = Window(start=0.0, end=10.0, fps=10.0, segment_seconds=10.0)
    assert sampled([0.0, 0.05, 1.0], window, 0) == [0, 2]


def test_frames_in_decode_order_are_refused_until_sorted() -> None:
    window = Window(start=0.0, end=10.0, fps=1.0, segment_seconds=10.0)
    decode_order = [0.0, 0.12, 0.04, 0.08]  # B-frames: a demuxer gives them after the frame they refer to
    with pytest.raises(ValueError, match="ascending"):
        sampled(decode_order, window, 0)
    assert sampled(sorted(decode_order), window, 0) == [0]


def reference_sample(times: list[float], window: Window) -> list[int]:
    """Sampling the whole list at once, straight from the rule: every frame in the window, or each slot's first."""
    inside = [index for index, time in enumerate(times) if window.start <= time < window.end]
    if window.fps is None:
        return inside
    first_of_slot: dict[int, int] = {}
    for index in inside:
        first_of_slot.setdefault(int((times[index] - window.start) * window.fps + 1e-9), index)
    return sorted(first_of_slot.values())


def random_case(seed: int) -> tuple[list[float], Window]:
    """Irregular frame times (bursts, gaps, repeats of segment edges) and a window with random sampling."""
    rng = random.Random(seed)
    fps = rng.choice([None, 0.5, 1.0, 3.0, 7.5, 29.97, 60.0])
    window = Window(
        start=rng.choice([0.0, rng.uniform(0, 3)]),
        end=rng.uniform(3, 20),
        fps=fps,
        segment_seconds=rng.choice([0.1, 1.0, 2.5, 4.0]),
    )
    times = [rng.uniform(0, 22) for _ in range(rng.randint(0, 400))]
    times += [t0 for t0, _ in window.segments()] + [window.end]
    return sorted(times), window


@pytest.mark.parametrize("seed", range(200))
def test_segments_together_sample_what_the_whole_list_samples_each_frame_once(seed: int) -> None:
    times, window = random_case(seed)
    by_segment: list[int] = []
    for segment, (t0, t1) in enumerate(window.segments()):
        # Like a demux pass: the frames of the segment's range and some of its neighbours'.
        around = [index for index, time in enumerate(times) if t0 - 0.5 <= time < t1 + 0.5]
        by_segment += [around[position] for position in sampled([times[index] for index in around], window, segment)]
    assert sorted(by_segment) == reference_sample(times, window)
    assert len(by_segment) == len(set(by_segment))


def test_estimated_frames_follow_the_nominal_rate() -> None:
    assert every_frame(start=5.0, end=25.0).estimated_frames(25.0) == 500
    assert Window(start=0.0, end=20.0, fps=2.0, segment_seconds=10.0).estimated_frames(25.0) == 40
    assert Window(start=0.0, end=20.0, fps=60.0, segment_seconds=10.0).estimated_frames(25.0) == 500
    assert every_frame(start=5.0, end=5.0).estimated_frames(25.0) == 0


def test_the_window_defaults_to_the_whole_video_and_ends_within_it() -> None:
    assert window_of(12.5, None, None, None, 10.0) == Window(0.0, 12.5, None, 10.0)
    assert window_of(12.5, 2.0, 30.0, 5.0, 10.0) == Window(2.0, 12.5, 5.0, 10.0)
    assert window_of(12.5, 2.0, 4.0, None, 10.0).segments() == [(2.0, 4.0)]


@pytest.mark.parametrize(
    ("start", "fps", "segment_seconds", "message"),
    [(-1.0, None, 10.0, "before the stream"), (0.0, 0.0, 10.0, "positive"), (0.0, None, 0.0, "some time")],
)
def test_a_window_refuses_what_has_no_meaning(
    start: float, fps: float | None, segment_seconds: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        window_of(10.0, start, None, fps, segment_seconds)

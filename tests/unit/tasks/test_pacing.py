"""The worker's time budget: predict calls sized to fit 2 s, results written at least every 2 s, or per slow image."""

from __future__ import annotations

from tasks.pacing import Pace


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(seconds_per_image: float, images: int, batch_size: int = 8) -> tuple[list[int], list[float]]:
    """Simulate a job: the sizes of its predict calls, and the times its results were written."""
    clock = Clock()
    pace = Pace(batch_size, clock=clock)
    sizes, writes, position = [], [], 0
    while True:
        size = min(pace.next_size(), images - position)
        if size:
            sizes.append(size)
            clock.now += size * seconds_per_image
            pace.predicted(size, size * seconds_per_image)
            position += size
        if pace.write_now(images - position):
            writes.append(clock.now)
            pace.wrote()
            if position == images:
                return sizes, writes


def test_a_slow_job_predicts_and_writes_image_by_image() -> None:
    sizes, writes = run(seconds_per_image=2.3, images=16)  # imgsz 4096 on two cores
    assert sizes == [1] * 16
    assert len(writes) == 16 and writes[0] == 2.3, "progress moves with the first image"


def test_a_fast_job_uses_whole_batches_and_writes_about_every_two_seconds() -> None:
    sizes, writes = run(seconds_per_image=0.05, images=400)
    assert sizes[0] == 1 and set(sizes[1:-1]) == {8}
    gaps = [later - earlier for earlier, later in zip([0.0, *writes], writes, strict=False)]
    assert max(gaps) <= 2.0 + 1e-9 and len(writes) <= 12, (gaps, writes)


def test_no_write_gap_passes_the_budget_at_a_middling_pace() -> None:
    sizes, writes = run(seconds_per_image=0.7, images=20)
    assert max(sizes) == 2, "two images fit in 2 s"
    gaps = [later - earlier for earlier, later in zip([0.0, *writes], writes, strict=False)]
    assert max(gaps) <= 2.0 + 1e-9, gaps


def test_an_empty_job_writes_once() -> None:
    assert run(seconds_per_image=1.0, images=0) == ([], [0.0])

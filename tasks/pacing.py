"""How many images a worker predicts at once, and when it writes what it found: on a time budget.

A job's progress (``done`` in PostgreSQL, which the job page polls, and the task's
PROGRESS state) moves when results are written. Writing after every batch of
``INFERENCE_BATCH_SIZE`` images left a slow job (16 images at imgsz 4096) at 0/16 for
37 s; writing after every image would cost a transaction per image on fast jobs. So:

- each ``predict`` call takes as many images as fit in :data:`PROGRESS_SECONDS` at the
  pace measured so far (one at first, never more than the batch size), so a slow job
  predicts one image at a time;
- results are written when the next call would take the time since the last write past
  :data:`PROGRESS_SECONDS`, and at the end: progress moves at least every 2 s while images
  finish, or with every image when one takes longer, and fast jobs write a few times a second
  at most.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

PROGRESS_SECONDS = 2.0


class Pace:
    """The measured seconds per image, the next call's size, and whether to write before it."""

    def __init__(
        self, batch_size: int, budget: float = PROGRESS_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.batch_size = batch_size
        self.budget = budget
        self.clock = clock
        self.seconds_per_image: float | None = None
        self.written_at = clock()

    def next_size(self) -> int:
        """Images for the next ``predict`` call: what fits in the budget, at least one, at most the batch size."""
        if self.seconds_per_image is None:
            return 1
        fits = math.floor(self.budget / self.seconds_per_image) if self.seconds_per_image > 0 else self.batch_size
        return min(self.batch_size, max(1, fits))

    def predicted(self, images: int, seconds: float) -> None:
        """Record how long a call over ``images`` images took."""
        if images:
            self.seconds_per_image = seconds / images

    def write_now(self, remaining: int) -> bool:
        """Whether to write the results held so far: at the end, or before the next call would overrun the budget."""
        if remaining == 0:
            return True
        next_call = (self.seconds_per_image or 0.0) * min(remaining, self.next_size())
        return self.clock() - self.written_at + next_call > self.budget

    def wrote(self) -> None:
        self.written_at = self.clock()

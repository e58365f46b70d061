"""The part task's prefetch: items made on a thread of their own, a bounded number ahead, stopped cleanly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tasks.parts import prefetched


def test_items_arrive_in_order_and_at_most_depth_ahead() -> None:
    made: list[int] = []

    def source() -> Iterator[int]:
        for number in range(20):
            made.append(number)
            yield number

    taken = []
    for item in prefetched(source(), 3):
        time.sleep(0.01)
        assert len(made) - len(taken) <= 3 + 2  # the queue, the item in hand, the one being put
        taken.append(item)
    assert taken == list(range(20))


@pytest.mark.parametrize("count", [1, 3, 4, 5, 6, 10])
def test_a_consumer_that_stops_early_never_waits_for_ever(count: int) -> None:
    """The producer may be blocked on a full queue, with its end marker still to put: stopping must free it."""
    items = prefetched(iter(range(count)), 4)
    assert next(items) == 0
    closing = threading.Thread(target=items.close)
    closing.start()
    closing.join(timeout=3)
    assert not closing.is_alive()


def test_the_producers_error_is_raised_to_the_consumer() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise ValueError("a corrupt file")

    items = prefetched(source(), 2)
    assert next(items) == 1
    with pytest.raises(ValueError, match="a corrupt file"):
        next(items)

"""Waiting for a job against real PostgreSQL, on a clock of the test's own: how soon an end is seen, what a long
wait costs, the slots, and a job deleted meanwhile."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import delete

from harness.images import image_bytes
from jobs.errors import JobNotFound
from jobs.waiting import Waiter
from storage import Storage
from storage.tables import Job
from tests.helpers import complete_job, create_queued_job


class Clock:
    """Time that passes only when the waiter sleeps; ``at`` runs something once that time is reached."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0
        self.due: list[tuple[float, Callable[[], object]]] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds
        self.sleeps += 1
        for when, action in list(self.due):
            if self.now >= when:
                self.due.remove((when, action))
                action()


@pytest.fixture()
def queued(storage: Storage) -> uuid.UUID:
    """A queued job whose task is never sent: only the test ends it."""
    return create_queued_job(storage, image_bytes(seed=uuid.uuid4().int % 10**6))


def waiter(clock: Clock, slots: int = 1) -> Waiter:
    return Waiter(slots, clock=clock, sleep=clock.sleep)


@pytest.mark.parametrize("ends_at", [0.03, 0.4, 2.0, 12.0])
def test_an_end_is_seen_within_a_tenth_of_the_time(storage: Storage, queued: uuid.UUID, ends_at: float) -> None:
    clock = Clock()
    clock.due.append((ends_at, lambda: complete_job(storage, queued)))
    with storage.database.session() as session:
        assert waiter(clock).wait(session, queued, 30) == "succeeded"
    assert ends_at <= clock.now <= ends_at * 1.1 + 0.005 + 1e-9, f"seen at {clock.now:.3f} s"


def test_a_long_wait_costs_about_a_hundred_polls_and_ends_on_time(storage: Storage, queued: uuid.UUID) -> None:
    clock = Clock()
    with storage.database.session() as session:
        assert waiter(clock).wait(session, queued, 30) == "queued"
        assert not session.in_transaction(), "no transaction stays open"
    assert clock.now == pytest.approx(30) and clock.sleeps <= 120


def test_no_free_slot_reads_the_status_once(storage: Storage, queued: uuid.UUID) -> None:
    with storage.database.session() as session:
        assert Waiter(0, sleep=pytest.fail).wait(session, queued, 30) == "queued", "no slot at all: no wait"
    inside, release = threading.Event(), threading.Event()

    def held(seconds: float) -> None:
        inside.set()
        release.wait(5)

    shared = Waiter(1, sleep=held)

    def hold_the_slot() -> None:
        with storage.database.session() as session:
            shared.wait(session, queued, 0.01)

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    try:
        assert inside.wait(5)
        with storage.database.session() as session:
            started = time.monotonic()
            assert shared.wait(session, queued, 30) == "queued"
            assert time.monotonic() - started < 1, "the second wait found the slot taken and did not wait"
    finally:
        release.set()
        holder.join()


def test_a_job_deleted_meanwhile_is_not_found(storage: Storage, queued: uuid.UUID) -> None:
    def remove() -> None:
        with storage.database.transaction() as session:
            session.execute(delete(Job).where(Job.id == queued))

    clock = Clock()
    clock.due.append((0.2, remove))
    with storage.database.session() as session, pytest.raises(JobNotFound):
        waiter(clock).wait(session, queued, 30)

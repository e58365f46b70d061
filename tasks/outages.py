"""Riding out a database or storage outage in place, for the detect task and its rounds.

An outage (the database or the volume briefly unavailable) is retried with capped
exponential back-off for ``JOB_DATABASE_RETRY_SECONDS``; past that,
:class:`DatabaseOutage` tells the task to leave its job(s) to beat's reaper.
Anything else is a bug, and is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Back-off between retries of an outage: 1 s, doubling, at most this.
MAX_RETRY_DELAY = 30.0


class DatabaseOutage(RuntimeError):
    """The database (or the storage volume) stayed unavailable for the whole retry budget."""


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is the database or the volume briefly unavailable (anything else is a bug and fails)."""
    if isinstance(exc, OperationalError | InterfaceError | OSError):
        return True
    # psycopg2 reports some dropped connections as a plain DatabaseError without an error code.
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def ride_out_outages(work: Callable[[], T], budget: float) -> T:
    """Run ``work``, retrying outages with capped exponential back-off until ``budget`` seconds have passed."""
    deadline = time.monotonic() + budget
    delay = 1.0
    while True:
        try:
            return work()
        except Exception as exc:
            if not is_outage(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise DatabaseOutage(f"still unavailable after {budget:.0f}s: {exc}") from exc
            log.warning("database or storage unavailable, retrying in %.0fs: %s", delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

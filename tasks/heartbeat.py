"""Keeping the leases of the jobs a worker process holds: a thread renews them all, in one statement.

A job's lease (``jobs.lifecycle.begin_attempt``) expires unless renewed, and the reaper then
re-sends the job: renewing every third of a lease lets a long batch keep its jobs, and a worker
that dies lets them go. The pipeline (:mod:`tasks.pipeline`) holds a job from the moment it takes
it until its end is written, so the set of held jobs changes as it runs.

A renewal that finds a lease gone (the job was cancelled, or another attempt took over after this
one outlived its lease) records the job in :attr:`Heartbeat.lost`, and the pipeline stops it at its
next batch boundary. A renewal that fails for an outage is only logged: the next one tries again,
and the writes themselves ride it out.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from sqlalchemy.orm import Session

from jobs.lifecycle import renew_leases

log = logging.getLogger(__name__)

T = TypeVar("T")


class Heartbeat:
    """Renews the leases of the held ``(job_id, token)`` attempts every third of a lease, in a thread."""

    def __init__(self, transaction: Callable[[Callable[[Session], T]], T], lease: timedelta) -> None:
        """``transaction(work)`` runs ``work`` in one transaction (once: a failed renewal waits for the next)."""
        self.transaction = transaction
        self.lease = lease
        self.lost: set[uuid.UUID] = set()
        self._held: dict[uuid.UUID, uuid.UUID] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="leases", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def hold(self, job_id: uuid.UUID, token: uuid.UUID) -> None:
        with self._lock:
            self._held[job_id] = token

    def release(self, job_id: uuid.UUID) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def mark_lost(self, job_id: uuid.UUID) -> None:
        """A write found the lease gone: stop renewing it, and let the pipeline stop the job."""
        with self._lock:
            self._held.pop(job_id, None)
            self.lost.add(job_id)

    def renew(self) -> None:
        """One renewal of every held lease."""
        with self._lock:
            held = list(self._held.items())
        if not held:
            return
        try:
            still = self.transaction(lambda session: renew_leases(session, held, self.lease))
        except Exception as exc:
            log.warning("could not renew %d leases: %s", len(held), exc)
            return
        with self._lock:  # a job released meanwhile has ended: it is not lost
            for job_id, token in held:
                if job_id not in still and self._held.get(job_id) == token:
                    del self._held[job_id]
                    self.lost.add(job_id)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease.total_seconds() / 3):
            self.renew()

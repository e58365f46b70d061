"""Waiting for a job to end, for a caller that answers with its result in the same request (``POST /api/v1/predict``).

The API waits in a request thread (gunicorn's gthread workers: ``API_THREADS`` of them
per process), so the wait must cost little and take few threads:

- It polls the job's status: one ``SELECT`` by primary key, on one connection held in autocommit
  for the wait, so no transaction stays open (no ``BEGIN`` or ``COMMIT`` either), and the
  statement is built once (``jobs.lifecycle.JOB_STATUS``). A poll costs about 50 µs of the API's CPU;
  checking a connection out and committing each time, with the statement built anew, cost 350 µs.
  PostgreSQL's LISTEN/NOTIFY would need a trigger in the schema and a connection of its own per
  waiting request, to save the polls' granularity, measured below.
- The pause between polls grows with the time waited: a tenth of it, from 5 ms to 0.5 s. A job's
  end is seen at most a tenth of the time waited later (5 ms for a job of a few tens of
  milliseconds), and a 30 s wait costs about a hundred polls. Against polls every millisecond,
  it added about 12 ms to a prediction of about 280 ms, p50 (``bench.predict``'s stack, on 2 busy cores).
- A process lets at most ``slots`` requests wait at once (``API_THREADS - 1``, so a thread is
  always left for other requests); a request that finds every slot taken reads the status once,
  without waiting, and its caller answers as if the time were up.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from jobs.errors import JobNotFound
from jobs.lifecycle import JOB_STATUS
from storage.tables import TERMINAL_STATUSES


@dataclass(frozen=True)
class Pace:
    """How long to pause between polls: ``share`` of the time waited so far, within ``[shortest, longest]``."""

    shortest: float = 0.005
    longest: float = 0.5
    share: float = 0.1

    def pause(self, waited: float) -> float:
        return min(max(waited * self.share, self.shortest), self.longest)


PACE = Pace()


class Waiter:
    """Waits for jobs to end, at most ``slots`` at once (none when 0)."""

    def __init__(
        self,
        slots: int,
        pace: Pace = PACE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._slots = threading.BoundedSemaphore(slots) if slots > 0 else None
        self.pace = pace
        self.clock = clock
        self.sleep = sleep

    def wait(self, session: Session, job_id: uuid.UUID, seconds: float) -> str:
        """The job's status once it has ended, or when ``seconds`` have passed (or at once when no slot is free):
        a status in ``storage.tables.TERMINAL_STATUSES`` when it ended. :class:`JobNotFound` when the job is gone
        (deleted meanwhile).

        ``session`` must have no transaction open (its caller committed); it holds one connection in autocommit
        for the wait, given back to the pool when the wait ends.
        """
        connection = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        try:
            if self._slots is None or not self._slots.acquire(blocking=False):
                return _status(connection, job_id)
            try:
                return self._poll(connection, job_id, seconds)
            finally:
                self._slots.release()
        finally:
            session.commit()

    def _poll(self, connection: Connection, job_id: uuid.UUID, seconds: float) -> str:
        started = self.clock()
        while True:
            status = _status(connection, job_id)
            waited = self.clock() - started
            if status in TERMINAL_STATUSES or waited >= seconds:
                return status
            self.sleep(min(self.pace.pause(waited), seconds - waited))


def _status(connection: Connection, job_id: uuid.UUID) -> str:
    status: str | None = connection.scalar(JOB_STATUS, {"job_id": job_id})
    if status is None:
        raise JobNotFound
    return status

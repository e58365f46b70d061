"""Sending a job's task and recording that it was sent: one implementation for the API and beat.

The sender is an argument (the API's ID-only publisher, or the worker's task
object), so neither side imports the other. The caller owns the transaction:
``enqueued_at`` becomes true only when it commits.

A job's first task id is the job id, so Flower and ``celery inspect`` show it.
Every later send (a re-send by the reaper, a retry) gets a new task id that starts
with the job id: workers remember revoked ids, and a revoke of an old message must
neither swallow the new one nor cancel the job again.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable

from sqlalchemy.orm import Session

from jobs.lifecycle import mark_enqueued

# Publishes the task of job ``job_id`` with task id ``task_id`` (raises when the broker refuses it).
Sender = Callable[[uuid.UUID, str], object]


def new_task_id(job_id: uuid.UUID) -> str:
    """A task id for a job's next message: the job id and a random suffix."""
    return f"{job_id}-{secrets.token_hex(4)}"


def send_then_mark(session: Session, job_id: uuid.UUID, send: Sender, task_id: str) -> None:
    """Send the job's task as ``task_id``, then mark the job enqueued under it in ``session``'s transaction."""
    send(job_id, task_id)
    mark_enqueued(session, job_id, task_id)

"""Whether a task was revoked, as the result backend says: a worker that receives a revoke writes REVOKED there.

Workers started after a revoke do not know its id, so a job's own attempt, a round's
leader looking at its mates (one MGET for the messages it takes), and the reaper all ask
the backend instead (best effort: an unreachable backend counts as not revoked, and the
job's lease still fences it).
A revoke that no worker received is kept and applied by :mod:`tasks.missed_revokes`.
The backend's connect and socket timeouts (``config.redis.REDIS_TIMEOUT_SECONDS``)
bound what a check costs when Redis hangs: under a second, where Celery's default
would hold every task start for 120 s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from celery import Celery, states

log = logging.getLogger(__name__)


def was_revoked(app: Celery, task_id: str) -> bool:
    """Whether the result backend holds REVOKED for ``task_id``; False when it cannot be read."""
    return task_id in revoked_among(app, [task_id])


def revoked_among(app: Celery, task_ids: Sequence[str]) -> set[str]:
    """Those of ``task_ids`` the result backend holds REVOKED for, read in one MGET; none when it cannot be read."""
    if not task_ids:
        return set()
    started = time.monotonic()
    backend = app.backend
    try:
        stored = backend.mget([backend.get_key_for_task(task_id) for task_id in task_ids])
        return {
            task_id
            for task_id, value in zip(task_ids, stored, strict=True)
            if value is not None and backend.decode_result(value).get("status") == states.REVOKED
        }
    except Exception:
        waited = time.monotonic() - started
        message = "revoked check gave up after %.2f s: no state of tasks %s from the result backend"
        log.warning(message, waited, ", ".join(task_ids), exc_info=True)
        return set()

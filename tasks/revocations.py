"""Whether a task was revoked, as the result backend says: a worker that receives a revoke writes REVOKED there.

Workers started after a revoke do not know its id, so a job's own attempt, a round's
leader looking at its mates, and the reaper all ask the backend instead (best effort:
an unreachable backend counts as not revoked, and the job's lease still fences it).
A revoke that no worker received is kept and applied by :mod:`tasks.missed_revokes`.
The backend's connect and socket timeouts (``config.redis.REDIS_TIMEOUT_SECONDS``)
bound what a check costs when Redis hangs: under a second, where Celery's default
would hold every task start for 120 s.
"""

from __future__ import annotations

import logging
import time

from celery import Celery, states

log = logging.getLogger(__name__)


def was_revoked(app: Celery, task_id: str) -> bool:
    """Whether the result backend holds REVOKED for ``task_id``; False when it cannot be read."""
    started = time.monotonic()
    try:
        return app.AsyncResult(task_id).state == states.REVOKED
    except Exception:
        waited = time.monotonic() - started
        message = "revoked check gave up after %.2f s: no state of task %s from the result backend"
        log.warning(message, waited, task_id, exc_info=True)
        return False

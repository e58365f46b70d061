"""Whether a task was revoked, as the result backend says: a revoke writes REVOKED there at once.

Workers started after a revoke do not know its id, so a job's own attempt, a round's
leader looking at its mates, and the reaper all ask the backend instead (best effort:
an unreachable backend counts as not revoked, and the job's lease still fences it).
"""

from __future__ import annotations

import logging

from celery import states

from tasks import app

log = logging.getLogger(__name__)


def was_revoked(task_id: str) -> bool:
    """Whether the result backend holds REVOKED for ``task_id``; False when it cannot be read."""
    try:
        return app.AsyncResult(task_id).state == states.REVOKED
    except Exception:
        log.warning("could not read the state of task %s from the result backend", task_id, exc_info=True)
        return False

"""Maintenance tasks that beat runs on the ``maintenance`` queue.

- ``tasks.maintenance.cleanup_expired_files``: the retention cleanup, daily. On
  demand: ``celery -A tasks call tasks.maintenance.cleanup_expired_files``
  (``--kwargs '{"dry_run": true}'`` only counts). The work itself lives in
  :mod:`storage.maintenance.retention`; a run that overlaps another is skipped at once.
- ``tasks.maintenance.reap_jobs``: every ``REAPER_INTERVAL_SECONDS``, re-sends the
  detect task of every unfinished job nothing is working on: running with an expired
  lease, or queued and not sent within a lease period (a lost or purged message, an
  API that died between commit and send). First it applies the revokes that no worker
  received (:mod:`tasks.missed_revokes`); a queued job whose task a worker saw revoked
  without holding its message (REVOKED in the result backend) ends cancelled instead of
  being re-sent. It re-sends the task of each part of a running job (``jobs.parts``) whose
  lease expired, or that was not sent within a lease period. It also deletes expired idempotency keys.
- ``tasks.maintenance.sweep_uploads``: every ``UPLOAD_SWEEP_INTERVAL_SECONDS``, removes
  the resumable uploads unfinished ``UPLOAD_EXPIRY_HOURS`` after their creation, row
  and part, logging each ("upload expired id=… tenant=… received=…"), finishes whole
  uploads a dead API process left unstored, and removes parts no unfinished upload
  owns (:mod:`resumable.expiry`). On demand:
  ``celery -A tasks call tasks.maintenance.sweep_uploads``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task, shared_task

from config.logs import job_context
from jobs.dispatch import new_task_id, send_then_mark
from jobs.idempotency import delete_expired_keys
from jobs.lifecycle import cancel_job, resendable_jobs
from jobs.messages import CLEANUP_TASK, DETECT_TASK, REAP_TASK, SWEEP_UPLOADS_TASK
from jobs.parts import resendable_parts
from jobs.retention import RetentionPolicy
from resumable.expiry import sweep_uploads as sweep_expired_uploads
from resumable.service import UploadService
from storage.maintenance.retention import run_cleanup
from tasks.missed_revokes import apply_missed_revokes
from tasks.parts import send_parts
from tasks.revocations import was_revoked
from tasks.runtime import runtime_of

log = logging.getLogger(__name__)

# Stop starting batches this long before the soft time limit, so the run still reports its counts.
TIME_LIMIT_MARGIN = 120
# Jobs looked at per reaper run (the next run takes the rest).
REAP_BATCH = 500


@shared_task(name=CLEANUP_TASK, bind=True)
def cleanup_expired_files(self: Task, dry_run: bool = False) -> dict[str, Any]:
    """Tombstone expired files, delete their bytes and leftovers; return the counts."""
    app = self.app
    runtime = runtime_of(app)
    budget = app.conf.task_soft_time_limit - TIME_LIMIT_MARGIN if app.conf.task_soft_time_limit else None
    policy = RetentionPolicy(runtime.settings.retention.days)
    report = run_cleanup(runtime.storage, policy, dry_run=dry_run, time_budget=budget)
    counts = report.as_dict()
    status = f"{report.status}: {report.reason}" if report.reason else report.status
    fields = " ".join(f"{key}={value}" for key, value in counts.items() if key not in ("status", "reason"))
    log.info("retention cleanup %s %s", status, fields, extra={"cleanup": counts})
    return counts


@shared_task(name=REAP_TASK, bind=True)
def reap_jobs(self: Task) -> dict[str, Any]:
    """Re-send the task of every unfinished job nothing is working on; return what was done.

    The rows stay locked until ``enqueued_at`` is committed, so an overlapping run
    skips them. A job re-sent while an attempt still lives costs one delivery that
    finds the lease held; ``begin_attempt`` lets only one attempt run.
    """
    app = self.app
    runtime = runtime_of(app)
    resent: list[str] = []
    cancelled = apply_missed_revokes(app)

    def send_detect(job_id: uuid.UUID, task_id: str) -> None:
        app.send_task(DETECT_TASK, args=[str(job_id)], task_id=task_id)

    with runtime.storage.database.transaction() as session:
        for job_id, status, task_id in resendable_jobs(session, runtime.settings.jobs.lease, REAP_BATCH):
            with job_context(str(job_id)):
                if status == "queued" and task_id and was_revoked(app, task_id):
                    if cancel_job(session, job_id, task_id=task_id):
                        cancelled.append(str(job_id))
                        log.warning("job cancelled: its task was revoked before any worker took it")
                    continue
                send_then_mark(session, job_id, send_detect, new_task_id(job_id))
                resent.append(str(job_id))
                log.warning("re-sent the task of a %s job nothing was working on", status)
        parts = resendable_parts(session, runtime.settings.jobs.lease, REAP_BATCH)
        expired_keys = delete_expired_keys(session)
    for job_id, part_id in parts:  # after their rows' locks are released: a part is marked sent in its own transaction
        with job_context(str(job_id)):
            send_parts(app, job_id, [part_id], runtime.transaction)
            log.warning("re-sent the task of a part nothing was working on part_id=%s", part_id)
    return {
        "resent": resent,
        "resent_parts": [str(part_id) for _, part_id in parts],
        "cancelled": cancelled,
        "expired_idempotency_keys": expired_keys,
    }


@shared_task(name=SWEEP_UPLOADS_TASK, bind=True)
def sweep_uploads(self: Task) -> dict[str, int]:
    """Remove expired unfinished uploads (row and part) and stray parts; return the counts."""
    runtime = runtime_of(self.app)
    settings = runtime.settings
    swept = sweep_expired_uploads(
        UploadService(runtime.storage, settings.files, max_pixels=settings.worker.max_image_pixels)
    )
    counts = swept.as_dict()
    log.info("upload sweep %s", " ".join(f"{key}={value}" for key, value in counts.items()), extra={"sweep": counts})
    return counts

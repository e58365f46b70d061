"""Maintenance tasks that beat runs on the ``maintenance`` queue.

- ``tasks.maintenance.cleanup_expired_files``: the retention cleanup, daily. On
  demand: ``celery -A tasks call tasks.maintenance.cleanup_expired_files``
  (``--kwargs '{"dry_run": true}'`` only counts). The work itself lives in
  :mod:`storage.retention`; a run that overlaps another is skipped at once.
- ``tasks.maintenance.requeue_stranded_jobs``: every few minutes, sends the
  detect task again for jobs committed but never enqueued.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from storage.jobs import mark_enqueued, stranded_jobs
from storage.logs import job_context
from storage.retention import run_cleanup
from tasks import app
from tasks.inference import detect
from tasks.runtime import get_runtime

log = logging.getLogger(__name__)

# Stop starting batches this long before the soft time limit, so the run still reports its counts.
TIME_LIMIT_MARGIN = 120
# A queued job with no enqueued_at this old was never sent (the API records the send within milliseconds).
STRANDED_AFTER = timedelta(minutes=5)
STRANDED_BATCH = 500


@app.task(name="tasks.maintenance.cleanup_expired_files", queue="maintenance")
def cleanup_expired_files(dry_run: bool = False) -> dict[str, Any]:
    """Tombstone expired files, delete their bytes and leftovers; return the counts."""
    runtime = get_runtime()
    budget = app.conf.task_soft_time_limit - TIME_LIMIT_MARGIN if app.conf.task_soft_time_limit else None
    report = run_cleanup(runtime.storage, runtime.settings.retention_days, dry_run=dry_run, time_budget=budget)
    counts = report.as_dict()
    status = f"{report.status}: {report.reason}" if report.reason else report.status
    fields = " ".join(f"{key}={value}" for key, value in counts.items() if key not in ("status", "reason"))
    log.info("retention cleanup %s %s", status, fields, extra={"cleanup": counts})
    return counts


@app.task(name="tasks.maintenance.requeue_stranded_jobs", queue="maintenance")
def requeue_stranded_jobs() -> dict[str, list[str]]:
    """Send ``tasks.inference.detect`` again for jobs committed but never enqueued; return their ids.

    The rows stay locked until ``enqueued_at`` is committed, so an overlapping run
    skips them and the API cannot withdraw one meanwhile. ``detect`` is idempotent:
    a job whose first message did go out after all only costs a message that finds
    it done.
    """
    runtime = get_runtime()
    with runtime.storage.session() as session:
        job_ids = stranded_jobs(session, STRANDED_AFTER, STRANDED_BATCH)
        for job_id in job_ids:
            with job_context(str(job_id)):
                detect.apply_async(args=[str(job_id)], task_id=str(job_id))
                mark_enqueued(session, job_id)
                log.warning("requeued a job that was committed but never enqueued")
    return {"requeued": [str(job_id) for job_id in job_ids]}

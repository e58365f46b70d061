"""``tasks.maintenance.cleanup_expired_files``: the retention cleanup, run daily by beat on the ``maintenance`` queue.

On demand: ``celery -A tasks call tasks.maintenance.cleanup_expired_files``
(``--kwargs '{"dry_run": true}'`` only counts). The work itself lives in
:mod:`storage.retention`; a run that overlaps another is skipped at once.
"""

from __future__ import annotations

import logging
from typing import Any

from storage.retention import run_cleanup
from tasks import app
from tasks.runtime import get_runtime

log = logging.getLogger(__name__)

# Stop starting batches this long before the soft time limit, so the run still reports its counts.
TIME_LIMIT_MARGIN = 120


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

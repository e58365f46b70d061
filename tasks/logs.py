"""Worker logging: the process-wide set-up of ``config.logs``, plus the job id on Celery's own lines.

Celery logs "Task ... received" and "... succeeded" itself, outside any
``job_context``; those records carry the task's name, id and arguments in ``data``,
and a job's task has the job id as its one argument.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import setup_logging

from config.logs import configure_logging
from jobs.messages import JOB_TASKS


def _first_argument(args: object) -> str | None:
    """The job id from Celery's rendering of a task's arguments (a list, or its repr)."""
    if isinstance(args, list | tuple) and args:
        return str(args[0])
    if isinstance(args, str) and args.startswith(("['", "('")):
        return args[2:].split("'", 1)[0]
    return None


class CeleryJobFilter(logging.Filter):
    """Sets ``job_id`` on Celery's lines about a job's task."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if not getattr(record, "job_id", None) and isinstance(data, dict) and data.get("name") in JOB_TASKS:
            record.job_id = _first_argument(data.get("args")) or data.get("id")
        return True


def init_app(app: Any) -> None:
    """Set up logging from ``app``'s settings when Celery would set up its own."""

    def set_up(loglevel: int | str | None = None, **_: object) -> None:
        configure_logging(app.settings.log_format, loglevel or logging.INFO, [CeleryJobFilter()])

    setup_logging.connect(set_up, weak=False)

"""Logging for the API and the workers: JSON lines (or plain text), each carrying the job id in context."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

_job_id: ContextVar[str | None] = ContextVar("job_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"


JOB_TASKS = ("tasks.inference.detect",)


def _job_of_celery_record(record: logging.LogRecord) -> str | None:
    """Celery's own "received"/"succeeded" lines name the task; a job's task id is its job id."""
    data = getattr(record, "data", None)
    if isinstance(data, dict) and data.get("name") in JOB_TASKS:
        return data.get("id")
    return None


class JobContextFilter(logging.Filter):
    """Adds ``job_id`` to every record about a job: logged in its context, or Celery's lines about its task."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = getattr(record, "job_id", None) or _job_id.get() or _job_of_celery_record(record)
        return True


class TextFormatter(logging.Formatter):
    """Plain text lines, ending in ``job_id=...`` when the record is about a job."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job_id = getattr(record, "job_id", None)
        return f"{line} job_id={job_id}" if job_id else line


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every log line emitted inside the block with ``job_id``."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            "%(levelname)s %(name)s %(process)d %(processName)s %(message)s %(job_id)s",
            rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
            timestamp="time",
        )
    return TextFormatter(TEXT_FORMAT)


def configure_logging(log_format: str, level: int | str = logging.INFO) -> None:
    """Send every logger's records to stderr in the chosen format ("json" or "text")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(JobContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

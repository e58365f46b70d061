"""Logging for every process: JSON lines (or plain text), each carrying the job id it is about.

Code that works on a job wraps it in :func:`job_context`; every line logged inside
gets ``job_id``. Processes may add filters of their own (the workers add one that
reads the job id off Celery's own lines, see ``tasks/logs.py``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

_job_id: ContextVar[str | None] = ContextVar("job_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"


class JobContextFilter(logging.Filter):
    """Adds ``job_id`` to every record: the one logged with it, or the job of the enclosing :func:`job_context`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = getattr(record, "job_id", None) or _job_id.get()
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


def configure_logging(log_format: str, level: int | str = logging.INFO, filters: Iterable[logging.Filter] = ()) -> None:
    """Send every logger's records to stderr in the chosen format ("json" or "text")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    for extra in filters:  # before the job context filter, which keeps a job_id already found
        handler.addFilter(extra)
    handler.addFilter(JobContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

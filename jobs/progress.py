"""How far a job has come, a window of its files at a time: what the job page polls to fill in its image cards.

A job of 10,000 files is polled by a page that shows 100 of them, every second or so, while results land. So a poll
reads one window of the job's files (by position), and with ``since`` only the files whose state changed since an
earlier poll: those whose result was written since, those whose owner deleted the file since, and, once the job has
ended since, those it never reached. An
answer is bounded by its window however big the job, and nearly empty while nothing changes.

``since`` is a cursor the previous answer gave: the database's clock when it was read, less
:data:`CURSOR_OVERLAP`. A result row carries the time its writing transaction began (``now()``), so a worker's
transaction that began before a poll read and committed after it would be missed by a cursor taken at the read;
the overlap covers such a transaction (a worker writes a batch's results in one short transaction). A file may so
be reported twice, which its reader takes as the same news.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select, true
from sqlalchemy.orm import Session, contains_eager

from jobs.errors import JobNotFound
from jobs.parts import parts_of
from jobs.queries import find_job
from storage.tables import Job, JobPart, Result, Upload

CURSOR_OVERLAP = timedelta(seconds=10)


@dataclass(frozen=True)
class FilesProgress:
    """The job (without its uploads), its window's uploads that changed since the cursor asked about (each with
    its result, or None), the parts of every upload in the window, which file each of those uploads holds, and the
    cursor for the next poll."""

    job: Job
    changed: list[Upload]
    parts: list[JobPart]
    file_ids: dict[uuid.UUID, uuid.UUID | None]
    cursor: datetime


def files_progress(
    session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None, offset: int, limit: int, since: datetime | None
) -> FilesProgress:
    """The job of ``tenant_id`` (:class:`JobNotFound` when none) and the ``limit`` files from ``offset`` in its
    order: all of them without ``since``, else those whose state changed at or after it."""
    job = find_job(session, job_id, tenant_id, with_uploads=False)
    if job is None:
        raise JobNotFound
    cursor = session.scalar(select(func.now())) - CURSOR_OVERLAP  # the transaction's start: before every read here
    window = session.execute(
        select(Upload.id, Upload.file_id)
        .where(Upload.job_id == job_id)
        .order_by(Upload.position)
        .limit(limit)
        .offset(offset)
    ).all()
    file_ids = {upload_id: file_id for upload_id, file_id in window}
    changed: list[Upload] = []
    if file_ids:
        query = (
            select(Upload)
            .outerjoin(Result, Result.upload_id == Upload.id)
            .where(Upload.id.in_(file_ids), _changed_since(job, since))
            .options(contains_eager(Upload.result))
            .order_by(Upload.position)
        )
        changed = list(session.scalars(query))
    return FilesProgress(job, changed, parts_of(session, list(file_ids)), file_ids, cursor)


def _changed_since(job: Job, since: datetime | None) -> ColumnElement[bool]:
    """Uploads whose state changed at or after ``since``: a result written since, a file its owner deleted since,
    or none when the job ended since (the files it never reached)."""
    if since is None:
        return true()
    changed = or_(Result.created_at >= since, Upload.file_deleted_at >= since)
    if job.finished_at is not None and job.finished_at >= since:
        return or_(changed, Result.upload_id.is_(None))
    return changed


# What became of one file of a job, as the job page's card says it.
WAITING, DONE, FAILED, NOT_REACHED, DELETED = "waiting", "done", "failed", "not_reached", "deleted"
FILE_STATES = (WAITING, DONE, FAILED, NOT_REACHED, DELETED)


def file_state(job: Job, upload: Upload) -> str:
    """One of :data:`FILE_STATES` for ``upload`` (its result loaded): ``not_reached`` when the job ended without a
    result for it (cancelled or failed first), ``deleted`` once its owner deleted the file."""
    if upload.file_id is None:
        return DELETED
    if upload.result is not None:
        return FAILED if upload.result.error else DONE
    return NOT_REACHED if job.is_finished else WAITING

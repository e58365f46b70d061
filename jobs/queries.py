"""Reading jobs: one job with everything about it, or a page of them. Nothing here changes state.

Every query is scoped to a tenant (``None``: every tenant, for admins and workers),
and loads exactly what its readers use (relationships are ``lazy="raise"``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

from sqlalchemy import ColumnElement, and_, func, select, true
from sqlalchemy.orm import Session, contains_eager, joinedload, selectinload

from files.ownership import HeldFile, held_files
from storage.tables import Job, Result, StoredFile, Upload, WebhookDelivery


def visible_to(tenant_id: uuid.UUID | None) -> ColumnElement[bool]:
    """Jobs of ``tenant_id``, or every job when it is None (an admin)."""
    return true() if tenant_id is None else Job.tenant_id == tenant_id


def find_job(session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None, with_uploads: bool = True) -> Job | None:
    """A job of ``tenant_id`` (any tenant's when None) with its webhook deliveries and their attempts loaded,
    and (``with_uploads``) its uploads, their files and results, fresh from the database even when the session
    holds it. Without its uploads, :func:`page_of_uploads` reads a page of them (a job may have thousands)."""
    deliveries = selectinload(Job.webhook_deliveries).selectinload(WebhookDelivery.attempt_log)
    uploads = selectinload(Job.uploads).options(joinedload(Upload.file), selectinload(Upload.result))
    query = (
        select(Job)
        .where(Job.id == job_id, visible_to(tenant_id))
        .options(deliveries, *([uploads] if with_uploads else []))
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).first()


def page_of_uploads(session: Session, job_id: uuid.UUID, limit: int, offset: int) -> list[Upload]:
    """A page of the job's uploads in their order, each with its file (None once deleted) and result."""
    query = (
        select(Upload)
        .where(Upload.job_id == job_id)
        .options(joinedload(Upload.file), joinedload(Upload.result))
        .order_by(Upload.position)
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query))


class UploadsInPages:
    """The job's uploads with a result, each with it loaded, read ``page`` at a time (by position) each time they
    are iterated: a job of any size is gone through in bounded memory (``jobs.exports``)."""

    def __init__(self, session: Session, job_id: uuid.UUID, page: int = 500) -> None:
        self.session = session
        self.job_id = job_id
        self.page = page

    def __iter__(self) -> Iterator[Upload]:
        after = -1
        while True:
            query = (
                select(Upload)
                .join(Result, Result.upload_id == Upload.id)
                .where(Upload.job_id == self.job_id, Upload.position > after)
                .options(contains_eager(Upload.result))
                .order_by(Upload.position)
                .limit(self.page)
            )
            uploads = list(self.session.scalars(query))
            yield from uploads
            if len(uploads) < self.page:
                return
            after = uploads[-1].position  # the session holds clean rows weakly: a page read goes once gone through


def upload_in_job(session: Session, job_id: uuid.UUID, file_id: uuid.UUID) -> Upload | None:
    """The job's (first) upload of the stored file, with its file and result loaded: one row, however big the job."""
    query = (
        select(Upload)
        .where(Upload.job_id == job_id, Upload.file_id == file_id)
        .options(joinedload(Upload.file), selectinload(Upload.result))
        .order_by(Upload.position)
        .limit(1)
    )
    return session.scalars(query).first()


def video_in_job(session: Session, job_id: uuid.UUID, file_id: uuid.UUID | None) -> Upload | None:
    """The job's upload of the video ``file_id`` (its first video when None), with its file loaded."""
    query = (
        select(Upload)
        .join(StoredFile, StoredFile.id == Upload.file_id)
        .where(Upload.job_id == job_id, StoredFile.media.is_not(None))
        .options(contains_eager(Upload.file))
        .order_by(Upload.position)
        .limit(1)
    )
    if file_id is not None:
        query = query.where(Upload.file_id == file_id)
    return session.scalars(query).first()


def neighbours_of(session: Session, upload: Upload) -> tuple[Upload | None, Upload | None]:
    """The uploads of its job just before and after ``upload`` whose file was not deleted (None at either end)."""
    kept = select(Upload).where(Upload.job_id == upload.job_id, Upload.file_id.is_not(None))
    before = kept.where(Upload.position < upload.position).order_by(Upload.position.desc()).limit(1)
    after = kept.where(Upload.position > upload.position).order_by(Upload.position).limit(1)
    return session.scalars(before).first(), session.scalars(after).first()


def live_files_of(session: Session, job_id: uuid.UUID) -> list[tuple[StoredFile, str]]:
    """The stored files of the job's uploads whose file was not deleted, in their order, each with the
    upload's name."""
    query = (
        select(StoredFile, Upload.filename)
        .join(Upload, Upload.file_id == StoredFile.id)
        .where(Upload.job_id == job_id)
        .order_by(Upload.position)
    )
    return [(file, filename) for file, filename in session.execute(query)]


def page_of_jobs(
    session: Session, limit: int, offset: int, tenant_id: uuid.UUID | None, statuses: Sequence[str] = ()
) -> tuple[list[Job], int]:
    """The tenant's jobs (everyone's when None) in ``statuses`` (any when empty), newest first, without their
    uploads (a job may have thousands): a page, and the total."""
    chosen = and_(visible_to(tenant_id), Job.status.in_(statuses) if statuses else true())
    total = session.scalar(select(func.count()).select_from(Job).where(chosen)) or 0
    query = select(Job).where(chosen).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(query)), total


def first_filenames(session: Session, job_ids: Sequence[uuid.UUID], count: int) -> dict[uuid.UUID, list[str]]:
    """The names of each job's first ``count`` uploads, in order (positions run from 0): one statement that reads
    ``count`` rows a job, however big the jobs."""
    query = (
        select(Upload.job_id, Upload.filename)
        .where(Upload.job_id.in_(job_ids), Upload.position < count)
        .order_by(Upload.position)
    )
    names: dict[uuid.UUID, list[str]] = {job_id: [] for job_id in job_ids}
    for job_id, filename in session.execute(query):
        names[job_id].append(filename)
    return names


def find_file(session: Session, file_id: uuid.UUID, tenant_id: uuid.UUID | None) -> HeldFile | None:
    """A stored file ``tenant_id`` holds (any tenant's when None): one of its jobs uploaded it, or it is the
    tenant's own (a finished resumable upload); with the name the tenant gave it (``files.ownership``).

    Storage is shared across tenants; what each sees of a file is its own upload of it.
    """
    return held_files(session, tenant_id, [file_id]).get(file_id)

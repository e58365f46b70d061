"""Job lifecycle in PostgreSQL: creation with its uploads, attempts, results and final status."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, selectinload

from storage.blobs import BlobStore, IncomingFile
from storage.files import store_incoming
from storage.images import ImageInfo
from storage.locks import lock_digests
from storage.models import Job, Result, StoredFile, Upload


@dataclass(frozen=True)
class JobParams:
    """What a job asks of inference."""

    model: str
    conf: float = 0.25
    iou: float = 0.7
    imgsz: int | None = None


@dataclass
class NewUpload:
    """A file received by the API: its temp file, client filename and identified type."""

    incoming: IncomingFile
    filename: str
    info: ImageInfo


@dataclass(frozen=True)
class WorkItem:
    """One upload still waiting for a result."""

    upload_id: uuid.UUID
    path: str


@dataclass(frozen=True)
class JobRun:
    """What a worker needs to (re)run a job: parameters and the uploads without results."""

    job_id: uuid.UUID
    params: JobParams
    total: int
    done: int
    attempts: int
    pending: list[WorkItem] = field(default_factory=list)


@dataclass(frozen=True)
class FileResult:
    """Inference output for one upload: detections, or an error for that file alone."""

    upload_id: uuid.UUID
    width: int | None
    height: int | None
    detections: list[dict[str, Any]]
    error: str | None = None


def create_job(session: Session, blobs: BlobStore, params: JobParams, uploads: Sequence[NewUpload]) -> Job:
    """Insert a queued job and its uploads, storing each file's bytes once (deduplicated)."""
    lock_digests(session, [u.incoming.sha256 for u in uploads])
    job = Job(
        id=uuid.uuid4(),
        status="queued",
        model=params.model,
        conf=params.conf,
        iou=params.iou,
        imgsz=params.imgsz,
        total_files=len(uploads),
    )
    session.add(job)
    session.flush()
    for position, upload in enumerate(uploads):
        stored, deduplicated = store_incoming(session, blobs, upload.incoming, upload.info)
        session.add(
            Upload(
                id=uuid.uuid4(),
                job_id=job.id,
                file_id=stored.id,
                position=position,
                filename=upload.filename,
                deduplicated=deduplicated,
            )
        )
    session.flush()
    return job


def mark_enqueued(session: Session, job_id: uuid.UUID) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=func.now()))


def stranded_jobs(session: Session, older_than: timedelta, limit: int) -> list[uuid.UUID]:
    """Queued jobs, oldest first, whose task was never recorded as sent (``enqueued_at`` is null).

    The API commits a job before it publishes the task; an API process that dies
    in between, or that cannot withdraw the job when the broker refuses it,
    leaves such a row behind. The rows are locked (others skip them) until the
    caller's transaction ends.
    """
    query = (
        select(Job.id)
        .where(Job.status == "queued", Job.enqueued_at.is_(None), Job.created_at < func.now() - older_than)
        .order_by(Job.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def delete_job(session: Session, job_id: uuid.UUID) -> None:
    """Remove a job that could not be enqueued (its uploads and results cascade), unless it was sent meanwhile."""
    session.execute(delete(Job).where(Job.id == job_id, Job.enqueued_at.is_(None)))


def get_job(session: Session, job_id: uuid.UUID) -> Job | None:
    """A job with its uploads, their files and results loaded."""
    query = select(Job).where(Job.id == job_id).options(selectinload(Job.uploads).selectinload(Upload.result))
    return session.scalars(query).first()


def list_jobs(session: Session, limit: int, offset: int) -> tuple[list[Job], int]:
    """Jobs newest first with their uploads, one page of them, and how many there are in all."""
    total = session.scalar(select(func.count()).select_from(Job)) or 0
    query = (
        select(Job)
        .options(selectinload(Job.uploads))
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query)), total


def begin_attempt(session: Session, job_id: uuid.UUID) -> JobRun | None:
    """Mark a job running and return its unfinished work; ``None`` when it is unknown or finished."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.is_finished:
        return None
    job.status = "running"
    job.started_at = job.started_at or func.now()
    job.attempts += 1
    query = (
        select(Upload.id, StoredFile.path)
        .join(StoredFile, StoredFile.id == Upload.file_id)
        .outerjoin(Result, Result.upload_id == Upload.id)
        .where(Upload.job_id == job_id, Result.upload_id.is_(None))
        .order_by(Upload.position)
    )
    pending = [WorkItem(upload_id, path) for upload_id, path in session.execute(query)]
    params = JobParams(model=job.model, conf=job.conf, iou=job.iou, imgsz=job.imgsz)
    return JobRun(job.id, params, job.total_files, job.total_files - len(pending), job.attempts, pending)


def record_results(session: Session, job_id: uuid.UUID, results: Sequence[FileResult], finish: bool) -> int:
    """Upsert results (never duplicated), update progress, and finish the job when asked.

    Returns how many of the job's uploads now have a result.
    """
    if results:
        rows = [
            {
                "upload_id": r.upload_id,
                "job_id": job_id,
                "width": r.width,
                "height": r.height,
                "detections": r.detections,
                "error": r.error,
            }
            for r in results
        ]
        statement = insert(Result).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=[Result.upload_id],
            set_={c: statement.excluded[c] for c in ("width", "height", "detections", "error")},
        )
        session.execute(statement)
    done = session.scalar(select(func.count()).select_from(Result).where(Result.job_id == job_id)) or 0
    values: dict[str, Any] = {"done_files": done}
    if finish:
        values |= {"status": "succeeded", "finished_at": func.now(), "error_code": None, "error_message": None}
    session.execute(update(Job).where(Job.id == job_id, Job.finished_at.is_(None)).values(**values))
    return done


def fail_job(session: Session, job_id: uuid.UUID, code: str, message: str) -> None:
    """Finish a job as failed with a machine-readable code (no-op when already finished)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.finished_at.is_(None))
        .values(status="failed", finished_at=func.now(), error_code=code, error_message=message[:2000])
    )

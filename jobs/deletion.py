"""Deleting a job or a file for real: the rows go, a tombstone row keeps who deleted what, and bytes that nothing
refers to any more leave the volume.

- :func:`delete_job`: a job of the tenant (an admin: anyone's) is cancelled first if it is
  queued or running, then deleted; its uploads, results, webhook deliveries and
  idempotency keys go with it (``ON DELETE CASCADE``).
- :func:`delete_file`: a file the tenant holds (:mod:`files.ownership`; an admin: every
  tenant's, for privacy requests). Its unfinished jobs are cancelled; their uploads of it
  stay, with no file (``file_id`` NULL, ``file_deleted_at`` set) and no result, so each
  job keeps its shape; the tenant's own file (``tenant_files``) and finished resumable
  uploads of it go.

Either way, one transaction: the digests' locks first (as an upload takes them, before
any job's row, so deletions and uploads wait for each other, never deadlock), the deletions,
then every stored file left with no reference in any tenant is tombstoned under those
locks (:func:`storage.maintenance.release.release_unreferenced`) and an audit row
(``tombstones``: who, what, sha256 and size of each file, whether its bytes were freed,
the jobs; no tenant when an admin deleted a file for every tenant) is written. After
the commit the bytes of the files released are unlinked under the lock, as retention
does (:func:`storage.maintenance.reclaim.reclaim_blobs`), and the cancelled jobs'
tasks are revoked. An upload of the same bytes meanwhile either committed its
reference first (nothing is released) or comes after and stores them anew.

After a deletion a GET of the job or the file answers 404, not 410: the job's rows are
gone, and the tenant no longer holds the file, exactly as if it never had. Retention's
410 is for a record that stays while only its bytes expired.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, true, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from config.logs import job_context
from files.errors import FileNotFound
from files.ownership import held_files
from jobs.errors import JobNotFound
from jobs.lifecycle import cancel_job
from jobs.queries import visible_to
from jobs.service import TaskSender
from storage import Storage
from storage.locks import lock_digests
from storage.maintenance.reclaim import reclaim_blobs
from storage.maintenance.release import FileRow, release_unreferenced
from storage.tables import FrameResult, Job, JobPart, Result, ResumableUpload, StoredFile, TenantFile, Tombstone, Upload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deleted:
    """What one deletion did: its tombstone row, the jobs it touched, and the bytes it freed."""

    tombstone_id: uuid.UUID
    job_ids: list[uuid.UUID]
    bytes_freed: int


@dataclass(frozen=True)
class _Cancelled:
    job_id: uuid.UUID
    task_id: str | None


def delete_job(
    session: Session,
    storage: Storage,
    sender: TaskSender,
    job_id: uuid.UUID,
    tenant_id: uuid.UUID | None,
    deleted_by: uuid.UUID | None,
) -> Deleted:
    """Delete a job of ``tenant_id`` (any tenant's when None), cancelling it first if it is unfinished, and free
    the bytes of its files that nothing else refers to; commits. ``deleted_by``: the API key asking.

    Raises :class:`JobNotFound` for a job the tenant cannot see (or that another request just deleted).
    """
    if session.scalar(select(Job.id).where(Job.id == job_id, visible_to(tenant_id))) is None:
        raise JobNotFound
    files = _files_of_job(session, job_id)
    lock_digests(session, {f.sha256 for f in files.values()})
    job = session.execute(
        select(Job.tenant_id, Job.task_id, Job.finished_at).where(Job.id == job_id).with_for_update()
    ).first()
    if job is None:  # deleted by another request while this one waited for the locks
        session.rollback()
        raise JobNotFound
    cancelled = [_Cancelled(job_id, job.task_id)] if job.finished_at is None and cancel_job(session, job_id) else []
    session.execute(delete(Job).where(Job.id == job_id))
    deleted = _finish(session, storage, "job", job_id, job.tenant_id, deleted_by, [job_id], files)
    _revoke(sender, cancelled, "job cancelled to be deleted")
    return deleted


def delete_file(
    session: Session,
    storage: Storage,
    sender: TaskSender,
    file_id: uuid.UUID,
    tenant_id: uuid.UUID | None,
    deleted_by: uuid.UUID | None,
) -> Deleted:
    """Delete a file ``tenant_id`` holds (every tenant's hold of it when None): cancel the unfinished jobs that
    use it, leave their uploads without file or result, drop the tenant's own file and finished resumable
    uploads of it, and free its bytes if no other tenant refers to them; commits.

    Raises :class:`FileNotFound` for a file the tenant does not hold.
    """
    held = held_files(session, tenant_id, [file_id]).get(file_id)
    if held is None:
        raise FileNotFound([file_id])
    lock_digests(session, [held.file.sha256])
    if file_id not in held_files(session, tenant_id, [file_id]):  # deleted by another request meanwhile
        session.rollback()
        raise FileNotFound([file_id])
    scope = Upload.job_id.in_(select(Job.id).where(Job.tenant_id == tenant_id)) if tenant_id is not None else true()
    uses = session.execute(
        select(Job.id, Job.task_id, Job.finished_at)
        .where(Job.id.in_(select(Upload.job_id).where(Upload.file_id == file_id, scope)))
        .order_by(Job.id)
        .with_for_update(of=Job)
    ).all()
    cancelled = [_Cancelled(j.id, j.task_id) for j in uses if j.finished_at is None and cancel_job(session, j.id)]
    its_uploads = select(Upload.id).where(Upload.file_id == file_id, scope)
    session.execute(delete(Result).where(Result.upload_id.in_(its_uploads)))
    session.execute(delete(FrameResult).where(FrameResult.upload_id.in_(its_uploads)))
    session.execute(delete(JobPart).where(JobPart.upload_id.in_(its_uploads)))
    session.execute(
        update(Upload)
        .where(Upload.id.in_(its_uploads))
        .values(file_id=None, file_deleted_at=func.now())
        .execution_options(synchronize_session=False)
    )
    own = [TenantFile.file_id == file_id]
    finished_uploads = [ResumableUpload.file_id == file_id, ResumableUpload.finished_at.is_not(None)]
    if tenant_id is not None:
        own.append(TenantFile.tenant_id == tenant_id)
        finished_uploads.append(ResumableUpload.tenant_id == tenant_id)
    session.execute(delete(TenantFile).where(*own))
    session.execute(delete(ResumableUpload).where(*finished_uploads))
    files = {file_id: _file_row(held.file)}
    deleted = _finish(session, storage, "file", file_id, tenant_id, deleted_by, [j.id for j in uses], files)
    _revoke(sender, cancelled, "job cancelled: its file was deleted")
    return deleted


def _files_of_job(session: Session, job_id: uuid.UUID) -> dict[uuid.UUID, FileRow]:
    """The stored files the job's uploads refer to (a file deleted from the job has none)."""
    query = (
        select(StoredFile.id, StoredFile.sha256, StoredFile.size, StoredFile.path)
        .where(StoredFile.id.in_(select(Upload.file_id).where(Upload.job_id == job_id)))
        .order_by(StoredFile.id)
    )
    return {row.id: FileRow(*row) for row in session.execute(query)}


def _file_row(file: StoredFile) -> FileRow:
    return FileRow(file.id, file.sha256, file.size, file.path)


def _finish(
    session: Session,
    storage: Storage,
    kind: str,
    subject_id: uuid.UUID,
    tenant_id: uuid.UUID | None,
    deleted_by: uuid.UUID | None,
    job_ids: Collection[uuid.UUID],
    files: dict[uuid.UUID, FileRow],
) -> Deleted:
    """Release the files nothing refers to any more, write the tombstone, commit, then unlink their bytes."""
    released = {row.id: row for row in release_unreferenced(session, list(files))}
    bytes_freed = sum(row.size for row in released.values())
    tombstone_id = uuid.uuid4()
    session.execute(
        insert(Tombstone).values(
            id=tombstone_id,
            kind=kind,
            subject_id=subject_id,
            tenant_id=tenant_id,
            deleted_by=deleted_by,
            job_ids=sorted(job_ids),
            files=[
                {"file_id": str(f.id), "sha256": f.sha256, "size": f.size, "freed": f.id in released}
                for f in files.values()
            ],
            bytes_freed=bytes_freed,
        )
    )
    session.commit()
    try:
        reclaim_blobs(storage, {row.sha256 for row in released.values()}, wait=True)
    except (OSError, SQLAlchemyError):  # done all the same: the next cleanup removes bytes only tombstones know
        log.warning("%s %s deleted, but its bytes were not reclaimed yet", kind, subject_id, exc_info=True)
    log.info("%s %s deleted: %d files, %d freed (%d bytes)", kind, subject_id, len(files), len(released), bytes_freed)
    return Deleted(tombstone_id, sorted(job_ids), bytes_freed)


def _revoke(sender: TaskSender, cancelled: Collection[_Cancelled], why: str) -> None:
    """Tell the workers to drop the cancelled jobs' tasks (after the commit; best effort)."""
    for job in cancelled:
        with job_context(str(job.job_id)):
            log.info(why)
            if job.task_id:
                sender.revoke(job.task_id)

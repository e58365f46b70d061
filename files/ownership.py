"""Which stored files a tenant holds: those its jobs uploaded, and its finished resumable uploads.

A job may name the tenant's files by id (``file_ids``) instead of uploading them
again; what another tenant stored is never visible, even with the same bytes, so a
tenant learns nothing of another's uploads.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, literal, select, union_all
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.orm import Session

from storage.tables import Job, StoredFile, TenantFile, Upload


@dataclass(frozen=True)
class HeldFile:
    """A stored file the tenant holds, with the name it first gave it and since when it holds it (the stored
    file's own ``created_at`` is the first upload of any tenant: not the tenant's to see)."""

    file: StoredFile
    filename: str
    held_since: datetime


def held_file_ids(tenant_id: uuid.UUID | None) -> Select[tuple[uuid.UUID]]:
    """The ids of the stored files ``tenant_id`` holds (every tenant's when None, an admin), duplicates included."""
    of_jobs = select(Upload.file_id).join(Job, Job.id == Upload.job_id).where(Upload.file_id.is_not(None))
    own = select(TenantFile.file_id)
    if tenant_id is not None:
        of_jobs = of_jobs.where(Job.tenant_id == tenant_id)
        own = own.where(TenantFile.tenant_id == tenant_id)
    return union_all(own, of_jobs).subquery().select()


def held_files(
    session: Session, tenant_id: uuid.UUID | None, file_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, HeldFile]:
    """Those of ``file_ids`` the tenant holds (live or not), each with its name: one statement however many."""
    if not file_ids:
        return {}
    ids = list(set(file_ids))
    # A resumable upload's own name first, then the job that uploaded the file first.
    own = select(TenantFile.file_id, TenantFile.filename, literal(0).label("rank"), TenantFile.created_at)
    of_jobs = select(Upload.file_id, Upload.filename, literal(1).label("rank"), Upload.created_at).join(
        Job, Job.id == Upload.job_id
    )
    own = own.where(TenantFile.file_id.in_(ids))
    of_jobs = of_jobs.where(Upload.file_id.in_(ids))
    if tenant_id is not None:
        own = own.where(TenantFile.tenant_id == tenant_id)
        of_jobs = of_jobs.where(Job.tenant_id == tenant_id)
    names = union_all(own, of_jobs).subquery()
    first_name = (
        select(
            names.c.file_id,
            names.c.filename,
            func.min(names.c.created_at).over(partition_by=names.c.file_id).label("held_since"),
        )
        .ext(distinct_on(names.c.file_id))
        .order_by(names.c.file_id, names.c.rank, names.c.created_at)
        .subquery()
    )
    rows = session.execute(
        select(StoredFile, first_name.c.filename, first_name.c.held_since).join(
            first_name, first_name.c.file_id == StoredFile.id
        )
    )
    return {file.id: HeldFile(file, filename, since) for file, filename, since in rows}


def add_tenant_file(session: Session, tenant_id: uuid.UUID, file_id: uuid.UUID, filename: str) -> None:
    """Record that the tenant holds the stored file under ``filename`` (kept as it was if it already did)."""
    statement = insert(TenantFile).values(tenant_id=tenant_id, file_id=file_id, filename=filename)
    session.execute(statement.on_conflict_do_nothing(index_elements=[TenantFile.tenant_id, TenantFile.file_id]))

"""Reading jobs: one job with everything about it, or a page of them. Nothing here changes state.

Every query is scoped to a tenant (``None``: every tenant, for admins and workers),
and loads exactly what its readers use (relationships are ``lazy="raise"``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, func, select, true
from sqlalchemy.orm import Session, joinedload, selectinload

from storage.tables import Job, StoredFile, Upload, WebhookDelivery


def _visible(tenant_id: uuid.UUID | None) -> ColumnElement[bool]:
    """Jobs of ``tenant_id``, or every job when it is None (an admin)."""
    return true() if tenant_id is None else Job.tenant_id == tenant_id


def find_job(session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Job | None:
    """A job of ``tenant_id`` (any tenant's when None) with its uploads, their files and results, and its
    webhook deliveries with their attempts loaded, fresh from the database even when the session holds it."""
    query = (
        select(Job)
        .where(Job.id == job_id, _visible(tenant_id))
        .options(
            selectinload(Job.uploads).options(joinedload(Upload.file), selectinload(Upload.result)),
            selectinload(Job.webhook_deliveries).selectinload(WebhookDelivery.attempt_log),
        )
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).first()


def page_of_jobs(
    session: Session, limit: int, offset: int, tenant_id: uuid.UUID | None, statuses: Sequence[str] = ()
) -> tuple[list[Job], int]:
    """The tenant's jobs (everyone's when None) in ``statuses`` (any when empty), newest first with their
    uploads (names only): a page, and the total."""
    chosen = and_(_visible(tenant_id), Job.status.in_(statuses) if statuses else true())
    total = session.scalar(select(func.count()).select_from(Job).where(chosen)) or 0
    query = (
        select(Job)
        .where(chosen)
        .options(selectinload(Job.uploads))
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query)), total


def find_file(session: Session, file_id: uuid.UUID, tenant_id: uuid.UUID | None) -> tuple[StoredFile, str] | None:
    """A stored file a job of ``tenant_id`` uploaded (any, when None), with the name that tenant first gave it.

    Storage is shared across tenants; what each sees of a file is its own upload of it.
    """
    query = (
        select(StoredFile, Upload.filename)
        .join(Upload, Upload.file_id == StoredFile.id)
        .join(Job, Job.id == Upload.job_id)
        .where(StoredFile.id == file_id, _visible(tenant_id))
        .order_by(Upload.created_at)
        .limit(1)
    )
    row = session.execute(query).first()
    return (row[0], row[1]) if row else None

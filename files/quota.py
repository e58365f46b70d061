"""The per-tenant storage quotas: bytes of the live files a tenant holds (``QUOTA_STORAGE_BYTES``), and bytes
announced by its unfinished resumable uploads (``QUOTA_PENDING_UPLOAD_BYTES``).

Each stored file counts once per tenant however many of its jobs use it, and not at
all once retention removed its bytes. Storage is deduplicated across tenants, but
each tenant is charged for what it holds, so no tenant learns what another stored.
Checks are serialised per tenant by a transaction-scoped lock, so two submissions
cannot both take the last room.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, ScalarSelect, and_, func, select, text
from sqlalchemy.orm import Session

from files.errors import LargerThanQuota, StorageQuotaExceeded
from files.ownership import held_file_ids
from storage.tables import ResumableUpload, StoredFile

# Namespace of the per-tenant advisory lock that serialises quota checks ("YQ").
QUOTA_LOCK_NAMESPACE = 0x5951
_LOCK_QUOTA = text("SELECT pg_advisory_xact_lock(:ns, hashtext(:tenant))")


def _stored(tenant_id: uuid.UUID) -> ScalarSelect[int]:
    held = held_file_ids(tenant_id).subquery()
    return (
        select(func.coalesce(func.sum(StoredFile.size), 0))
        .where(StoredFile.id.in_(select(held.c[0])), StoredFile.deleted_at.is_(None))
        .scalar_subquery()
    )


def _unfinished(tenant_id: uuid.UUID) -> ColumnElement[bool]:
    """The tenant's resumable uploads that are unfinished and not expired (an expired one's part waits only for
    the sweep)."""
    return and_(
        ResumableUpload.tenant_id == tenant_id,
        ResumableUpload.finished_at.is_(None),
        ResumableUpload.expires_at > func.now(),
    )


def _pending(tenant_id: uuid.UUID) -> ScalarSelect[int]:
    return select(func.coalesce(func.sum(ResumableUpload.length), 0)).where(_unfinished(tenant_id)).scalar_subquery()


def pending_uploads(session: Session, tenant_id: uuid.UUID) -> int:
    """How many of the tenant's resumable uploads are unfinished and not expired."""
    return int(session.scalar(select(func.count()).where(_unfinished(tenant_id))) or 0)


def stored_bytes(session: Session, tenant_id: uuid.UUID) -> int:
    """The bytes of the live stored files the tenant holds, each counted once."""
    return int(session.scalar(select(_stored(tenant_id))) or 0)


def pending_upload_bytes(session: Session, tenant_id: uuid.UUID) -> int:
    """The bytes announced (``Upload-Length``) by the tenant's unfinished resumable uploads that have not expired."""
    return int(session.scalar(select(_pending(tenant_id))) or 0)


@dataclass(frozen=True)
class StorageUsage:
    """What a tenant takes of its two quotas, and the quotas (``GET /api/v1/account``)."""

    used_bytes: int
    quota_bytes: int
    pending_upload_bytes: int
    pending_upload_quota_bytes: int


def storage_usage(session: Session, tenant_id: uuid.UUID, quota: int, pending_quota: int) -> StorageUsage:
    """The tenant's usage of its storage ``quota`` and of its ``pending_quota`` for unfinished uploads."""
    return StorageUsage(
        stored_bytes(session, tenant_id), quota, pending_upload_bytes(session, tenant_id), pending_quota
    )


def ensure_room(session: Session, tenant_id: uuid.UUID, adding: int, quota: int, largest: int = 0) -> int:
    """Raise unless ``adding`` more bytes fit the tenant's ``quota``; returns the bytes taken now.

    What a tenant takes is its stored bytes and the bytes its unfinished uploads announced (they are
    stored once whole, without another check), so a job's files and an upload are weighed alike.
    :class:`LargerThanQuota` when one file (``largest`` bytes) could never fit, else
    :class:`StorageQuotaExceeded`. Takes the tenant's quota lock until the transaction
    ends: the caller stores what it checked in the same transaction.
    """
    if largest > quota:
        raise LargerThanQuota(largest, quota)
    session.execute(_LOCK_QUOTA, {"ns": QUOTA_LOCK_NAMESPACE, "tenant": str(tenant_id)})
    taken = int(session.scalar(select(_stored(tenant_id) + _pending(tenant_id))) or 0)
    if adding and taken + adding > quota:
        raise StorageQuotaExceeded(taken, adding, quota)
    return taken

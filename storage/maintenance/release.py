"""Stored files no row names any more: what refers to a file, and tombstoning rows under their digest's lock.

A stored file is *referenced* while a job's upload (``uploads.file_id``), a tenant's own
file (``tenant_files``) or a resumable upload (``resumable_uploads.file_id``) names it.
Deleting a job or a file (``jobs.deletion``) removes references; the rows it leaves
unreferenced are *released* here, in the deleting transaction: under the digests'
locks, taken before the re-check, so an upload of the same bytes (which holds the lock
from before it looks for the live row until it commits) either committed its reference
first, and the row stays, or comes after and stores the bytes anew. Their bytes go once
that transaction has committed, under the lock again (:func:`storage.maintenance.reclaim.reclaim_blobs`),
exactly as retention's two steps do: a failure in between leaves a tombstone whose bytes the
next cleanup removes, never a live row without bytes.

:func:`tombstone_rows` is the one statement that tombstones, for retention and deletion alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from storage.locks import lock_digests
from storage.tables import ResumableUpload, StoredFile, TenantFile, Upload


@dataclass(frozen=True)
class FileRow:
    """A ``stored_files`` row as maintenance handles it."""

    id: uuid.UUID
    sha256: str
    size: int
    path: str


def named_by_tenant_files(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """Whether a ``tenant_files`` row meeting ``conditions`` names the ``stored_files`` row of the enclosing query."""
    return select(TenantFile.file_id).where(TenantFile.file_id == StoredFile.id, *conditions).exists()


def named_by_resumable_uploads(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """Whether a resumable upload meeting ``conditions`` names the ``stored_files`` row of the enclosing query."""
    return select(ResumableUpload.id).where(ResumableUpload.file_id == StoredFile.id, *conditions).exists()


def referenced() -> ColumnElement[bool]:
    """Whether an upload, a tenant's file or a resumable upload names the ``stored_files`` row of the enclosing
    query."""
    return or_(
        select(Upload.id).where(Upload.file_id == StoredFile.id).exists(),
        named_by_tenant_files(),
        named_by_resumable_uploads(),
    )


def tombstone_rows(session: Session, ids: Collection[uuid.UUID], condition: ColumnElement[bool]) -> list[FileRow]:
    """Tombstone those of the rows ``ids`` that are live and meet ``condition`` now; return them.

    The caller holds their digests' locks in this transaction, taken before this statement.
    """
    if not ids:
        return []
    statement = (
        update(StoredFile)
        .where(StoredFile.id.in_(list(ids)), StoredFile.deleted_at.is_(None), condition)
        .values(deleted_at=func.now())
        .returning(StoredFile.id, StoredFile.sha256, StoredFile.size, StoredFile.path)
        .execution_options(synchronize_session=False)
    )
    return [FileRow(*row) for row in session.execute(statement)]


def release_unreferenced(session: Session, file_ids: Collection[uuid.UUID]) -> list[FileRow]:
    """Tombstone those of ``file_ids`` that are live and no row references, under their digests' locks (waiting
    for an upload that holds one); return them. Once the transaction commits, the caller reclaims their bytes."""
    if not file_ids:
        return []
    live = select(StoredFile.sha256).where(StoredFile.id.in_(list(file_ids)), StoredFile.deleted_at.is_(None))
    digests = session.scalars(live).all()  # a tombstoned row never comes back to life: no need to lock its digest
    lock_digests(session, digests)
    return tombstone_rows(session, file_ids, ~referenced())

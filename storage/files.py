"""Stored-file metadata: deduplicated by SHA-256 under a per-digest lock."""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, Exists, select
from sqlalchemy.orm import Session

from storage.blobs import BlobStore, IncomingFile
from storage.images import ImageInfo
from storage.tables import Job, StoredFile, Upload


def find_live_file(session: Session, sha256: str) -> StoredFile | None:
    """The live (not tombstoned) row for a digest, share-locked for this transaction."""
    query = (
        select(StoredFile)
        .where(StoredFile.sha256 == sha256, StoredFile.deleted_at.is_(None))
        .with_for_update(read=True)
    )
    return session.scalars(query).first()


def store_incoming(
    session: Session, blobs: BlobStore, incoming: IncomingFile, info: ImageInfo
) -> tuple[StoredFile, bool]:
    """Point at the live blob with the same content, or install the bytes and add a row.

    The caller must hold the digest's lock (:func:`storage.locks.lock_digests`) in
    this transaction. Returns the row and whether it was deduplicated.
    """
    existing = find_live_file(session, incoming.sha256)
    if existing is not None and blobs.exists(existing.path):
        incoming.discard()
        return existing, True
    relpath = blobs.install(incoming)
    if existing is not None:  # the row outlived its bytes: the upload heals it
        return existing, True
    row = StoredFile(
        id=uuid.uuid4(),
        sha256=incoming.sha256,
        size=incoming.size,
        content_type=info.content_type,
        width=info.width,
        height=info.height,
        path=relpath,
    )
    session.add(row)
    session.flush()
    return row, False


def referenced_by_jobs(*conditions: ColumnElement[bool]) -> Exists:
    """Whether a job meeting ``conditions`` has an upload of the ``stored_files`` row in the enclosing query."""
    return (
        select(Upload.id)
        .join(Job, Job.id == Upload.job_id)
        .where(Upload.file_id == StoredFile.id, *conditions)
        .exists()
    )

"""Stored-file metadata: deduplicated by SHA-256 under a per-digest lock, with what the file is (an image's
size; a video's display size and probe, ``media``) as :func:`storage.media.identify_file` found it.

A submission reads and writes these rows with Core statements built once, not
through the ORM's unit of work: the :class:`StoredFile` it gets back is built from
the row's values, and is not in the session.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import ColumnElement, Exists, bindparam, insert, select
from sqlalchemy.orm import Session

from storage.blobs import BlobStore, IncomingFile
from storage.media import FileInfo, VideoInfo
from storage.tables import Job, StoredFile, Upload

FILES = StoredFile.__table__
_LIVE_FILE = (
    select(FILES).where(FILES.c.sha256 == bindparam("sha256"), FILES.c.deleted_at.is_(None)).with_for_update(read=True)
)
_INSERT_FILE = insert(FILES).returning(FILES.c.created_at)
_WRITTEN_COLUMNS = tuple(column.key for column in FILES.columns if column.key != "created_at")


def find_live_file(session: Session, sha256: str) -> StoredFile | None:
    """The live (not tombstoned) row for a digest, share-locked for this transaction."""
    row = session.execute(_LIVE_FILE, {"sha256": sha256}).first()
    return StoredFile(**row._mapping) if row is not None else None


def store_incoming(
    session: Session, blobs: BlobStore, incoming: IncomingFile, info: FileInfo
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
    return _insert_file(session, incoming.sha256, incoming.size, info, relpath), False


def store_part(
    session: Session, blobs: BlobStore, part: Path, sha256: str, size: int, info: FileInfo
) -> tuple[StoredFile, bool]:
    """The live stored file for a finished resumable upload's part: the one with the same content, or a new one.

    ``part`` (fsynced, ``sha256`` its digest) is hard-linked to its content address
    when no live blob holds those bytes; it is left in place either way, for the
    caller to remove once it committed. The caller must hold the digest's lock in this
    transaction. Returns the row and whether it was deduplicated.
    """
    existing = find_live_file(session, sha256)
    if existing is not None and blobs.exists(existing.path):
        return existing, True
    relpath = blobs.link_into_place(part, sha256)
    if existing is not None:  # the row outlived its bytes: the upload heals it
        return existing, True
    return _insert_file(session, sha256, size, info, relpath), False


def _insert_file(session: Session, sha256: str, size: int, info: FileInfo, relpath: str) -> StoredFile:
    row = StoredFile(
        id=uuid.uuid4(),
        sha256=sha256,
        size=size,
        content_type=info.content_type,
        width=info.width,
        height=info.height,
        path=relpath,
        deleted_at=None,
        media=info.as_json() if isinstance(info, VideoInfo) else None,
    )
    values = {key: getattr(row, key) for key in _WRITTEN_COLUMNS}
    row.created_at = session.execute(_INSERT_FILE, values).scalar_one()
    return row


def referenced_by_jobs(*conditions: ColumnElement[bool]) -> Exists:
    """Whether a job meeting ``conditions`` has an upload of the ``stored_files`` row in the enclosing query."""
    return (
        select(Upload.id)
        .join(Job, Job.id == Upload.job_id)
        .where(Upload.file_id == StoredFile.id, *conditions)
        .exists()
    )

"""Bytes that no live row references: found on disk, and removed only under their digest's lock.

An upload installs a blob and inserts its live row in one transaction that holds the
digest's advisory lock (the contract of :func:`storage.files.store_incoming`). So once this module holds
that lock and sees no live row for a digest, no upload is between installing those
bytes and committing their row, and the bytes at that content address may go. A
digest whose lock is busy is skipped; a later run picks it up.

Directories under ``blobs/`` are never removed: an upload may be about to rename
a file into one of them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from more_itertools import chunked
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import Storage
from storage.blobs import PROBE_PREFIX, TEMP_SUFFIX, UPLOAD_PREFIX, BlobStore, blob_relpath, is_sha256
from storage.locks import lock_digests, try_lock_digests
from storage.tables import StoredFile

# A blob on disk that no row at all knows is left alone this long (an upload may have just rolled back).
UNKNOWN_BLOB_GRACE = timedelta(hours=1)
# An upload temp file untouched this long belongs to an interrupted upload (a probe file, to a failed probe).
TEMP_FILE_GRACE = timedelta(hours=1)
DIGEST_CHUNK = 1000

_HEX2 = re.compile(r"^[0-9a-f]{2}$")


@dataclass
class Reclaimed:
    """What :func:`reclaim_blobs` did: the digests whose blobs it disposed of, their bytes, digests skipped as busy."""

    digests: set[str] = field(default_factory=set)
    bytes: int = 0
    busy: int = 0

    @property
    def files(self) -> int:
        return len(self.digests)


def live_digests(session: Session, digests: Collection[str]) -> set[str]:
    """The digests among ``digests`` that have a live (not tombstoned) row."""
    if not digests:
        return set()
    query = select(StoredFile.sha256).where(StoredFile.sha256.in_(digests), StoredFile.deleted_at.is_(None))
    return set(session.scalars(query))


def reclaim_blobs(
    storage: Storage, digests: Collection[str], dispose: Callable[[str], int] | None = None, *, wait: bool = False
) -> Reclaimed:
    """Dispose of the blobs of ``digests`` that no live row references, each under its digest's lock.

    ``dispose`` takes a blob's relative path and returns the bytes it freed; by
    default the blob is deleted. Call it only after the transaction that made the
    rows tombstones has committed. A busy digest is skipped, or with ``wait`` waited for
    (a deletion, which frees what it tombstoned now rather than at the next cleanup).
    """
    dispose = dispose or storage.blobs.delete
    result = Reclaimed()
    with storage.database.transaction() as session:
        if wait:
            lock_digests(session, digests)
            locked = set(digests)
        else:
            locked = try_lock_digests(session, digests)
        result.busy = len(set(digests) - locked)
        for digest in sorted(locked - live_digests(session, locked)):
            relpath = blob_relpath(digest)
            if storage.blobs.exists(relpath):
                result.bytes += dispose(relpath)
                result.digests.add(digest)
    return result


def iter_blob_digests(blobs: BlobStore) -> Iterator[str]:
    """The digest of every file on disk at a content address ``blobs/ab/cd/<sha256>``."""
    for first in _subdirs(blobs.blobs_dir):
        for second in _subdirs(first):
            with os.scandir(second) as entries:
                for entry in entries:
                    name = entry.name
                    if is_sha256(name) and name[:2] == first.name and name[2:4] == second.name and entry.is_file():
                        yield name


def _subdirs(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    with os.scandir(directory) as entries:
        return sorted(Path(e.path) for e in entries if _HEX2.match(e.name) and e.is_dir(follow_symlinks=False))


@dataclass(frozen=True)
class OrphanBlob:
    """A blob on disk without a live row; ``tombstoned`` when a tombstoned row still knows it."""

    sha256: str
    size: int
    mtime: float
    tombstoned: bool

    def removable(self, unknown_before: float) -> bool:
        """A tombstone's bytes may go at once (a cleanup stopped before unlinking); unknown ones after a grace."""
        return self.tombstoned or self.mtime < unknown_before


def find_orphan_blobs(storage: Storage) -> Iterator[OrphanBlob]:
    """Every blob on disk whose digest has no live row, checked against the database in chunks."""
    for digests in chunked(iter_blob_digests(storage.blobs), DIGEST_CHUNK):
        with storage.database.transaction() as session:
            query = (
                select(StoredFile.sha256, func.bool_or(StoredFile.deleted_at.is_(None)))
                .where(StoredFile.sha256.in_(digests))
                .group_by(StoredFile.sha256)
            )
            has_live_row = {digest: live for digest, live in session.execute(query)}
        for digest in digests:
            if has_live_row.get(digest):
                continue
            try:
                stat = storage.blobs.path_of(blob_relpath(digest)).stat()
            except FileNotFoundError:
                continue
            yield OrphanBlob(digest, stat.st_size, stat.st_mtime, digest in has_live_row)


def stale_temp_files(blobs: BlobStore, older_than: float) -> Iterator[Path]:
    """Temp files last written before ``older_than`` (a POSIX time): an interrupted upload's
    ``tmp/upload-*.part``, and a readiness probe's ``tmp/probe-*`` that a failing volume kept."""
    if not blobs.tmp_dir.is_dir():
        return
    for pattern in (f"{UPLOAD_PREFIX}*{TEMP_SUFFIX}", f"{PROBE_PREFIX}*"):
        for path in blobs.tmp_dir.glob(pattern):
            try:
                if path.stat().st_mtime < older_than:
                    yield path
            except FileNotFoundError:
                continue

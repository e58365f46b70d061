"""Check stored files against the bytes on disk: ``python -m storage.maintenance fsck [--repair] [--no-hash]``.

Reports, one line each: live rows whose bytes are missing (``missing_bytes``), blobs
on disk without a live row (``orphan_blob``), and blobs that do not hash to their
row's digest (``hash_mismatch``). Exits 0 when nothing is left to fix, 1 otherwise.

``--repair`` does only what is safe, under the cluster-wide maintenance lock and each
digest's lock (a busy digest is left for the next run):

- an orphan blob is deleted when tombstones know it or it is older than an hour,
  exactly as the retention cleanup does;
- a row without bytes is tombstoned, unless an unfinished job references it (then it
  is only reported: uploading the same content again heals the row);
- a mismatching blob is moved to ``quarantine/`` under the storage root for
  inspection and its row tombstoned, unless an unfinished job references it.

What it does not look at, on purpose: a job's upload whose file its tenant deleted
(``file_id`` NULL) names no bytes, and the ``tombstones`` audit rows name files whose
rows are tombstoned or gone, so neither has anything to check; a row only a tenant's
own file or a finished resumable upload holds is checked like any live row (repair
tombstones it when its bytes are missing: the tenant then gets 410 for it, as after
retention). Part files of unfinished resumable uploads (``parts/`` under the storage
root) are the tus server's, removed by its expiry sweep: fsck walks ``blobs/`` only.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from more_itertools import chunked
from sqlalchemy import func, select, update

from storage import Storage
from storage.blobs import file_sha256
from storage.files import referenced_by_jobs
from storage.locks import try_lock_digests
from storage.maintenance.reclaim import UNKNOWN_BLOB_GRACE, find_orphan_blobs, reclaim_blobs
from storage.tables import Job, StoredFile

ROW_BATCH = 500
QUARANTINE_DIR = "quarantine"


@dataclass
class Finding:
    """One problem: its kind, the digest, a description, and whether repair fixed it."""

    kind: str  # missing_bytes | orphan_blob | hash_mismatch
    sha256: str
    detail: str
    file_id: uuid.UUID | None = None
    repaired: bool = False

    def line(self) -> str:
        state = "repaired" if self.repaired else "found"
        return "\t".join([self.kind, state, str(self.file_id or "-"), self.sha256, self.detail])


@dataclass
class FsckReport:
    findings: list[Finding] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        kinds = ("missing_bytes", "orphan_blob", "hash_mismatch")
        counts = {kind: sum(f.kind == kind for f in self.findings) for kind in kinds}
        counts["repaired"] = sum(f.repaired for f in self.findings)
        return counts

    @property
    def clean(self) -> bool:
        return all(f.repaired for f in self.findings)


def _live_rows(storage: Storage) -> Iterator[tuple[StoredFile, bool]]:
    """Every live row with whether an unfinished job references it, in id order, one batch per session."""
    after: uuid.UUID | None = None
    while True:
        with storage.database.transaction() as session:
            query = select(StoredFile, referenced_by_jobs(Job.finished_at.is_(None))).where(
                StoredFile.deleted_at.is_(None)
            )
            if after is not None:
                query = query.where(StoredFile.id > after)
            rows = session.execute(query.order_by(StoredFile.id).limit(ROW_BATCH)).all()
        if not rows:
            return
        yield from rows
        after = rows[-1][0].id


def _row_problem(storage: Storage, row: StoredFile, check_hash: bool) -> Finding | None:
    path = storage.blobs.path_of(row.path)
    if not path.is_file():
        return Finding("missing_bytes", row.sha256, row.path, row.id)
    if check_hash and (actual := file_sha256(path)) != row.sha256:
        return Finding("hash_mismatch", row.sha256, f"{row.path} hashes to {actual}", row.id)
    return None


def _tombstone_if_still(storage: Storage, row: StoredFile, kind: str) -> bool:
    """Tombstone ``row`` under its digest's lock if it still has the problem and no unfinished job uses it."""
    with storage.database.transaction() as session:
        if not try_lock_digests(session, [row.sha256]):
            return False
        problem = _row_problem(storage, row, check_hash=True)
        if problem is None or problem.kind != kind:
            return False
        statement = (
            update(StoredFile)
            .where(
                StoredFile.id == row.id,
                StoredFile.deleted_at.is_(None),
                ~referenced_by_jobs(Job.finished_at.is_(None)),
            )
            .values(deleted_at=func.now())
            .execution_options(synchronize_session=False)
        )
        return session.execute(statement).rowcount == 1


def _quarantine(storage: Storage) -> Callable[[str], int]:
    """A ``dispose`` for :func:`reclaim_blobs` that moves a blob under ``quarantine/`` instead of deleting it."""

    def move(relpath: str) -> int:
        source = storage.blobs.path_of(relpath)
        folder = storage.blobs.root / QUARANTINE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        size = source.stat().st_size
        os.replace(source, folder / f"{source.name}.{time.strftime('%Y%m%dT%H%M%S')}")
        return size

    return move


def _check_rows(storage: Storage, report: FsckReport, repair: bool, check_hash: bool) -> None:
    for row, used_by_unfinished_job in _live_rows(storage):
        finding = _row_problem(storage, row, check_hash)
        if finding is None:
            continue
        report.findings.append(finding)
        if used_by_unfinished_job:
            finding.detail += " (an unfinished job references it: left alone)"
        elif repair and _tombstone_if_still(storage, row, finding.kind):
            if finding.kind == "missing_bytes":
                finding.repaired = True
            else:  # the tombstone is committed: move the bad bytes aside unless a re-upload replaced them
                finding.repaired = row.sha256 in reclaim_blobs(storage, [row.sha256], _quarantine(storage)).digests


def _check_orphans(storage: Storage, report: FsckReport, repair: bool) -> None:
    unknown_before = time.time() - UNKNOWN_BLOB_GRACE.total_seconds()
    for chunk in chunked(find_orphan_blobs(storage), ROW_BATCH):
        removable = [o.sha256 for o in chunk if o.removable(unknown_before)]
        removed = reclaim_blobs(storage, removable).digests if repair and removable else set()
        for orphan in chunk:
            known = "known to tombstoned rows only" if orphan.tombstoned else "no row"
            young = "" if orphan.removable(unknown_before) else ", younger than the grace period: left alone"
            finding = Finding("orphan_blob", orphan.sha256, f"size={orphan.size} ({known}{young})")
            finding.repaired = orphan.sha256 in removed
            report.findings.append(finding)


def run_fsck(storage: Storage, *, repair: bool = False, check_hash: bool = True) -> FsckReport:
    """Check every live row and every blob on disk; with ``repair``, fix what is safe to fix."""
    report = FsckReport()
    _check_rows(storage, report, repair, check_hash)
    _check_orphans(storage, report, repair)
    return report

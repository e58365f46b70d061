"""Retention's mechanics: tombstone the stored files an expiry policy names, delete their bytes, remove leftovers.

Policy. Which live files are *expired* is the domain's decision, handed in as an
:class:`ExpiryPolicy` (the job retention policy, :class:`jobs.retention.RetentionPolicy`):
this module knows rows and bytes, not jobs. An expired file's row is tombstoned
(``deleted_at``) and its bytes deleted; the rows that refer to it stay, and the same
content uploaded later is stored anew.

Safety. Each batch is two short transactions. The first takes the digests' advisory
locks without waiting (an upload holding one is skipped until the next run),
re-checks the policy and tombstones the rows. After it commits, the second takes
the locks again and deletes the bytes of digests that still have no live row (see
:mod:`storage.maintenance.reclaim`), so bytes a concurrent re-upload installed are never
removed. One run at a time across the cluster (:func:`storage.locks.maintenance_lock`);
a crash leaves tombstones whose bytes the next run's orphan sweep removes.

Leftovers. Upload temp files and readiness-probe files older than an hour, and blobs that no row knows
(older than an hour, or whose rows are all tombstones) are removed too.

``python -m storage.maintenance cleanup [--dry-run]`` runs it, or lists what it would delete.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Protocol

from more_itertools import chunked
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from storage import Storage
from storage.locks import maintenance_lock, try_lock_digests
from storage.maintenance.reclaim import (
    TEMP_FILE_GRACE,
    UNKNOWN_BLOB_GRACE,
    find_orphan_blobs,
    reclaim_blobs,
    stale_temp_files,
)
from storage.maintenance.release import FileRow, tombstone_rows
from storage.tables import StoredFile

BATCH_SIZE = 500

# Called with (kind, description) for each thing a dry run would delete.
Listener = Callable[[str, str], None]


class ExpiryPolicy(Protocol):
    """Which stored files have expired: the files are the storage's, the decision the domain's."""

    @property
    def days(self) -> int:
        """How long files are kept, as the report states it."""
        ...

    def expired(self, now: datetime) -> ColumnElement[bool]:
        """The condition a ``stored_files`` row meets once expired, at the database's time ``now``."""
        ...


@dataclass
class CleanupReport:
    """What one run did (or, in a dry run, would do); JSON-serialisable through :meth:`as_dict`."""

    dry_run: bool
    retention_days: int
    status: str = "done"  # done | incomplete (out of time, resumes next run) | skipped (another run holds the lock)
    reason: str | None = None
    tombstoned: int = 0
    files_deleted: int = 0
    orphan_blobs_removed: int = 0
    temp_files_removed: int = 0
    bytes_freed: int = 0
    # Left for a later run: an upload held the digest's lock, or the file was used again meanwhile.
    skipped: int = 0
    duration_seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def find_expired(session: Session, expired: ColumnElement[bool], after: uuid.UUID | None, limit: int) -> list[FileRow]:
    """Up to ``limit`` live rows meeting ``expired`` with ids above ``after``, in id order (no locks taken)."""
    live_expired = and_(StoredFile.deleted_at.is_(None), expired)
    query = select(StoredFile.id, StoredFile.sha256, StoredFile.size, StoredFile.path).where(live_expired)
    if after is not None:
        query = query.where(StoredFile.id > after)
    return [FileRow(*row) for row in session.execute(query.order_by(StoredFile.id).limit(limit))]


def tombstone_expired(session: Session, expired: ColumnElement[bool], files: list[FileRow]) -> list[FileRow]:
    """Tombstone those of ``files`` whose digest lock is free and that are live and still ``expired``; return them."""
    locked = try_lock_digests(session, [f.sha256 for f in files])
    return tombstone_rows(session, [f.id for f in files if f.sha256 in locked], expired)


class _Run:
    """One cleanup: expired files, then stale temp files, then orphan blobs, stopping at the deadline."""

    def __init__(
        self,
        storage: Storage,
        policy: ExpiryPolicy,
        report: CleanupReport,
        batch_size: int,
        deadline: float | None,
        listener: Listener,
    ) -> None:
        self.storage = storage
        self.policy = policy
        self.report = report
        self.batch_size = batch_size
        self.deadline = deadline
        self.listener = listener

    def out_of_time(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.report.status = "incomplete"
            return True
        return False

    def expire_files(self) -> None:
        with self.storage.database.transaction() as session:
            expired = self.policy.expired(session.scalar(select(func.now())))
        after = None
        while not self.out_of_time():
            with self.storage.database.transaction() as session:
                batch = find_expired(session, expired, after, self.batch_size)
            if not batch:
                return
            after = batch[-1].id
            if self.report.dry_run:
                for file in batch:
                    self.listener("expired", f"{file.id} {file.sha256} {file.size} {file.path}")
                    self.report.tombstoned += 1
                    if self.storage.blobs.exists(file.path):
                        self.report.files_deleted += 1
                        self.report.bytes_freed += file.size
                continue
            with self.storage.database.transaction() as session:
                tombstoned = tombstone_expired(session, expired, batch)
            self.report.tombstoned += len(tombstoned)
            self.report.skipped += len(batch) - len(tombstoned)
            reclaimed = reclaim_blobs(self.storage, {f.sha256 for f in tombstoned})
            self.report.files_deleted += reclaimed.files
            self.report.bytes_freed += reclaimed.bytes

    def remove_temp_files(self) -> None:
        for path in stale_temp_files(self.storage.blobs, time.time() - TEMP_FILE_GRACE.total_seconds()):
            try:
                size = path.stat().st_size
                if self.report.dry_run:
                    self.listener("temp", f"{path} {size}")
                else:
                    path.unlink()
            except FileNotFoundError:
                continue
            self.report.temp_files_removed += 1
            self.report.bytes_freed += size

    def remove_orphan_blobs(self) -> None:
        unknown_before = time.time() - UNKNOWN_BLOB_GRACE.total_seconds()
        orphans = (o for o in find_orphan_blobs(self.storage) if o.removable(unknown_before))
        for chunk in chunked(orphans, self.batch_size):
            if self.out_of_time():
                return
            if self.report.dry_run:
                for orphan in chunk:
                    self.listener("orphan", f"{orphan.sha256} {orphan.size}")
                self.report.orphan_blobs_removed += len(chunk)
                self.report.bytes_freed += sum(o.size for o in chunk)
                continue
            reclaimed = reclaim_blobs(self.storage, [o.sha256 for o in chunk])
            self.report.orphan_blobs_removed += reclaimed.files
            self.report.bytes_freed += reclaimed.bytes
            self.report.skipped += reclaimed.busy


def run_cleanup(
    storage: Storage,
    policy: ExpiryPolicy,
    *,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    time_budget: float | None = None,
    listener: Listener | None = None,
) -> CleanupReport:
    """Apply the expiry ``policy`` and remove leftovers; a dry run only counts and lists (``listener``).

    Returns at once with status ``skipped`` when another cleanup holds the cluster-wide
    lock (a dry run takes no lock). With ``time_budget`` (seconds) no new batch starts
    after it is spent and the status is ``incomplete``; the next run carries on.
    """
    started = time.monotonic()
    report = CleanupReport(dry_run=dry_run, retention_days=policy.days)
    deadline = started + time_budget if time_budget is not None else None
    run = _Run(storage, policy, report, batch_size, deadline, listener or (lambda kind, what: None))
    with nullcontext(True) if dry_run else maintenance_lock(storage.database.engine) as acquired:
        if not acquired:
            report.status, report.reason = "skipped", "another cleanup is running"
        else:
            run.expire_files()
            if not run.out_of_time():
                run.remove_temp_files()
                run.remove_orphan_blobs()
    report.duration_seconds = round(time.monotonic() - started, 3)
    return report

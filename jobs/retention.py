"""The retention policy: a stored file's bytes go RETENTION_DAYS after the last job using them finished, and no
sooner than RETENTION_DAYS after a tenant took it as a file of its own.

A live stored file is *expired* when no job that references it is unfinished or
finished less than ``days`` ago, no ``tenant_files`` row younger than ``days`` holds
it and no resumable upload finished less than ``days`` ago made it (a finished
upload no job has used yet must not vanish at once), and either some row references
it (an upload, a tenant's file or a resumable upload:
:func:`storage.maintenance.release.referenced`) or (a row whose job was withdrawn
after a broker failure) it is older than :data:`UNREFERENCED_ROW_GRACE`. Jobs,
uploads, results and tenant files stay for the audit trail, and the content endpoint
answers 410. The policy is the domain's, since it reads jobs;
:mod:`storage.maintenance.retention` applies it to rows and bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_

from storage.files import referenced_by_jobs
from storage.maintenance.release import named_by_resumable_uploads, named_by_tenant_files, referenced
from storage.tables import Job, ResumableUpload, StoredFile, TenantFile

# A row nothing references (its job was withdrawn) expires once this old.
UNREFERENCED_ROW_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class RetentionPolicy:
    """Files are kept while a job that uses them is unfinished, ``days`` after the last one finished, and ``days``
    after a tenant took them as its own."""

    days: int

    def expired(self, now: datetime) -> ColumnElement[bool]:
        """The policy at the database's time ``now``, as a condition on ``stored_files`` rows."""
        kept_since = now - timedelta(days=self.days)
        needed_by_jobs = referenced_by_jobs(or_(Job.finished_at.is_(None), Job.finished_at >= kept_since))
        held_by_tenant = or_(
            named_by_tenant_files(TenantFile.created_at >= kept_since),
            named_by_resumable_uploads(ResumableUpload.finished_at >= kept_since),
        )
        return and_(
            ~needed_by_jobs,
            ~held_by_tenant,
            or_(referenced(), StoredFile.created_at < now - UNREFERENCED_ROW_GRACE),
        )

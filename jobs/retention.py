"""The retention policy: a stored file's bytes go once every job using them finished more than RETENTION_DAYS ago.

A live stored file is *expired* when no job that references it is unfinished or
finished less than ``days`` ago, and either some job references it or (a row whose
job was withdrawn after a broker failure) it is older than
:data:`UNREFERENCED_ROW_GRACE`. Jobs, uploads and results stay for the audit trail,
and the content endpoint answers 410. The policy is the domain's, since it reads
jobs; :mod:`storage.maintenance.retention` applies it to rows and bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_

from storage.files import referenced_by_jobs
from storage.tables import Job, StoredFile

# A row no upload references (its job was withdrawn) expires once this old.
UNREFERENCED_ROW_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class RetentionPolicy:
    """Files are kept while a job that uses them is unfinished, and ``days`` after the last one finished."""

    days: int

    def expired(self, now: datetime) -> ColumnElement[bool]:
        """The policy at the database's time ``now``, as a condition on ``stored_files`` rows."""
        finished_before = now - timedelta(days=self.days)
        still_needed = referenced_by_jobs(or_(Job.finished_at.is_(None), Job.finished_at >= finished_before))
        return and_(~still_needed, or_(referenced_by_jobs(), StoredFile.created_at < now - UNREFERENCED_ROW_GRACE))

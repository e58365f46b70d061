"""One writer per upload across every API replica: a PostgreSQL session advisory lock on the upload's id.

A PATCH may stream for minutes, so the lock is not a transaction's: it is held on a
connection of its own in autocommit (no transaction stays open across the body),
released when the request ends, or by PostgreSQL when the process dies. A second
writer does not wait for the first: it is told the upload is busy, having written
nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

# Namespace of the two-key advisory locks taken per resumable upload ("YU").
UPLOAD_LOCK_NAMESPACE = 0x5955
_TRY_LOCK = text("SELECT pg_try_advisory_lock(:ns, hashtext(:upload))")
_UNLOCK = text("SELECT pg_advisory_unlock(:ns, hashtext(:upload))")


@contextmanager
def upload_lock(engine: Engine, upload_id: uuid.UUID) -> Iterator[bool]:
    """Try to become the one writer of ``upload_id``; yields whether this request is it (never waits)."""
    params = {"ns": UPLOAD_LOCK_NAMESPACE, "upload": str(upload_id)}
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        acquired = bool(connection.scalar(_TRY_LOCK, params))
        try:
            yield acquired
        finally:
            if acquired:
                connection.execute(_UNLOCK, params)

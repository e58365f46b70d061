"""Storage proper: uploaded bytes on the shared volume and their rows in PostgreSQL.

:class:`Storage` is the one face of it that the API, the workers and the maintenance
commands hold: ``storage.database`` (rows, ``storage/db.py``, tables in
``storage/tables.py``) and ``storage.blobs`` (bytes, ``storage/blobs.py``). This
package knows nothing of HTTP, Celery, torch or the job lifecycle (``jobs/``): which
stored files have expired is ``jobs.retention``'s decision, handed to the cleanup by its
callers (the one import of ``jobs`` here is the operators' command line, ``maintenance/cli.py``).
"""

from __future__ import annotations

from pathlib import Path

from storage.blobs import BlobStore
from storage.db import Database


class Storage:
    """The database and the blob store of one deployment (``pre_ping``: see :mod:`storage.db`)."""

    def __init__(self, database_url: str, storage_root: Path, pre_ping: bool = True) -> None:
        self.database = Database(database_url, pre_ping=pre_ping)
        self.blobs = BlobStore(storage_root)

    def dispose(self, close: bool = True) -> None:
        """Drop the connection pool; ``close=False`` in a forked child leaves the parent's connections open."""
        self.database.dispose(close=close)


__all__ = ["Storage"]

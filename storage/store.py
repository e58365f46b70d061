"""The storage face shared by the API and the workers: database sessions plus blobs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.orm import Session

from storage.blobs import BlobStore
from storage.db import make_engine, make_session_factory, session_scope
from storage.settings import Settings


class Storage:
    """Engine, session factory and blob store built from one set of settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        self.session_factory = make_session_factory(self.engine)
        self.blobs = BlobStore(settings.storage_root)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error, always closed."""
        with session_scope(self.session_factory) as session:
            yield session

    def database_is_reachable(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def dispose(self, close: bool = True) -> None:
        """Drop the connection pool; ``close=False`` in a forked child leaves the parent's connections open."""
        self.engine.dispose(close=close)

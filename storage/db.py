"""The database: an engine and its sessions.

Scope, truthfully: a *transaction* (:meth:`Database.transaction`, SQLAlchemy's own
``sessionmaker.begin()``) is one unit of work, committed on success, rolled back on
error, its session always closed. The workers use short transactions (a job is one
to start it, one per batch of results, one to end it), because none may stay open
across inference. The API uses one session per request instead (``app/context.py``),
closed when the request ends, with explicit commits where a job must be committed
before its task is sent.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from sqlalchemy import URL, Engine, create_engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker


def normalize_database_url(database_url: str) -> URL:
    """Accept the libpq form (``postgresql://``, as psql takes it) and use the psycopg2 driver."""
    url = make_url(database_url.replace("postgres://", "postgresql://", 1))
    return url.set(drivername="postgresql+psycopg2") if url.drivername == "postgresql" else url


def make_engine(database_url: str, **kwargs: object) -> Engine:
    """An engine that checks connections before use and fails fast when the database is down."""
    return create_engine(
        normalize_database_url(database_url),
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5, "application_name": "yolo-jobs"},
        **kwargs,
    )


class Database:
    """An engine and its session factory; objects stay readable after commit (``expire_on_commit=False``)."""

    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)
        self.sessions = sessionmaker(bind=self.engine, expire_on_commit=False)

    def transaction(self) -> AbstractContextManager[Session]:
        """A session in a transaction: committed on success, rolled back on error, always closed."""
        return self.sessions.begin()

    def session(self) -> Session:
        """A session the caller commits and closes (the API's per-request session)."""
        return self.sessions()

    def is_reachable(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def dispose(self, close: bool = True) -> None:
        """Drop the connection pool; ``close=False`` in a forked child leaves the parent's connections open."""
        self.engine.dispose(close=close)

"""The database: an engine and its sessions.

Scope, truthfully: a *transaction* (:meth:`Database.transaction`, SQLAlchemy's own
``sessionmaker.begin()``) is one unit of work, committed on success, rolled back on
error, its session always closed. The workers use short transactions (a job is one
to start it, one per batch of results, one to end it), because none may stay open
across inference. The API uses one session per request instead (``app/extensions.py``: ``db_session``),
closed when the request ends, with explicit commits where a job must be committed
before its task is sent.

A connection that sat in the pool may have been closed by the server (a restart, an
idle timeout). With ``pre_ping`` SQLAlchemy sends ``SELECT 1`` on every checkout to
find out: a round trip per transaction. Without it, the checkout only asks the
socket, without a round trip: a closed connection has its server's goodbye (or
EOF) waiting to be read, and is then replaced, SQLAlchemy's pool retrying with a
fresh one (``DisconnectionError`` from a ``checkout`` listener). A connection lost
without a word (a network partition) is found by the statement that fails on it;
SQLAlchemy then recycles the pool, and the request answers 503 ``database_unavailable``.
"""

from __future__ import annotations

import select
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, exc, make_url, text
from sqlalchemy.orm import Session, sessionmaker


def normalize_database_url(database_url: str) -> URL:
    """Accept the libpq form (``postgresql://``, as psql takes it) and use the psycopg2 driver."""
    url = make_url(database_url.replace("postgres://", "postgresql://", 1))
    return url.set(drivername="postgresql+psycopg2") if url.drivername == "postgresql" else url


def make_engine(database_url: str, pre_ping: bool = True, **kwargs: object) -> Engine:
    """An engine that fails fast when the database is down and never hands out a connection the server
    closed: checked by ``SELECT 1`` with ``pre_ping``, by its socket alone without."""
    engine = create_engine(
        normalize_database_url(database_url),
        pool_pre_ping=pre_ping,
        connect_args={"connect_timeout": 5, "application_name": "yolo-jobs"},
        **kwargs,
    )
    if not pre_ping:
        event.listen(engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Make the pool replace a connection the server closed: an idle connection has nothing to read
    unless the server said goodbye (or hung up)."""
    if dbapi_connection.closed:
        raise exc.DisconnectionError("the connection was closed")
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLPRI)
    if poller.poll(0):
        raise exc.DisconnectionError("the server closed the connection")


class Database:
    """An engine and its session factory; objects stay readable after commit (``expire_on_commit=False``).

    ``pre_ping=False`` skips the ``SELECT 1`` on each checkout (see the module's docstring).
    """

    def __init__(self, database_url: str, pre_ping: bool = True) -> None:
        self.engine = make_engine(database_url, pre_ping=pre_ping)
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

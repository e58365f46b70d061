"""Database engine and sessions: one session per request or per task, always closed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import URL, Engine, create_engine, make_url
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


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success, rolls back on error and is always closed."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()

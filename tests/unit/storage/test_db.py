"""The database: URLs in libpq's form, transactions that commit or roll back whole, reachability, and
closed connections replaced without a ping."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from harness.costs import counting_statements
from harness.processes import free_port, wait_until
from storage import Storage
from storage.db import Database, make_engine, normalize_database_url
from storage.tables import ModelRecord


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgres://u@h:5432/d", "postgresql+psycopg2"),
        ("postgresql://u@h:5432/d", "postgresql+psycopg2"),
        ("postgresql+psycopg2://u@h:5432/d", "postgresql+psycopg2"),
    ],
)
def test_urls_use_the_psycopg2_driver(url: str, driver: str) -> None:
    normalized = normalize_database_url(url)
    assert (normalized.drivername, normalized.host, normalized.database) == (driver, "h", "d")


def model(name: str) -> ModelRecord:
    return ModelRecord(name=name, weights=f"/m/{name}.pt", task="detect", classes={})


def models(store: Storage) -> int:
    with store.database.transaction() as session:
        return session.scalar(select(func.count()).select_from(ModelRecord)) or 0


def test_a_transaction_commits_on_success(store: Storage) -> None:
    with store.database.transaction() as session:
        session.add(model("kept"))
    assert models(store) == 1


def test_a_transaction_rolls_back_whole_on_error(store: Storage) -> None:
    with pytest.raises(RuntimeError), store.database.transaction() as session:
        session.add(model("first"))
        session.flush()
        session.add(model("second"))
        raise RuntimeError("the unit of work failed")
    assert models(store) == 0


def test_objects_stay_readable_after_commit(store: Storage) -> None:
    with store.database.transaction() as session:
        record = model("readable")
        session.add(record)
    assert (record.name, record.weights) == ("readable", "/m/readable.pt")


def test_reachability(store: Storage) -> None:
    assert store.database.is_reachable()
    dead = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    try:
        assert not dead.is_reachable()
    finally:
        dead.dispose()


def test_without_pre_ping_a_connection_the_server_closed_is_replaced_without_a_round_trip(
    module_database_url: str,
) -> None:
    database = Database(module_database_url, pre_ping=False)
    admin = make_engine(module_database_url, isolation_level="AUTOCOMMIT")
    try:
        with database.engine.connect() as connection:
            backend = connection.scalar(select(func.pg_backend_pid()))
        with admin.connect() as connection:
            connection.execute(select(func.pg_terminate_backend(backend)))
            gone = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
            wait_until(lambda: connection.scalar(gone, {"pid": backend}) == 0, 10, what="the backend to exit")
        with counting_statements(database.engine) as counts, database.engine.connect() as connection:
            assert connection.scalar(select(func.pg_backend_pid())) != backend
        assert counts["ping"] == 0 and counts["SELECT"] == 1
    finally:
        database.dispose()
        admin.dispose()

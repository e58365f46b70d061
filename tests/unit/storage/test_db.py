"""The database: URLs in libpq's form, transactions that commit or roll back whole, and reachability."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from harness.processes import free_port
from storage import Storage
from storage.db import Database, normalize_database_url
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

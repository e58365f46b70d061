"""schema.sql is the source of truth: it applies (twice) with psql, and the SQLAlchemy models match it."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from sqlalchemy import inspect

from storage.db import make_engine
from storage.models import Base
from tests.support import PROJECT_ROOT, create_database, drop_database


@pytest.fixture()
def empty_database_url():  # type: ignore[no-untyped-def]
    name = f"yolo_schema_{uuid.uuid4().hex[:10]}"
    url = create_database(name)  # applies schema.sql once through SQLAlchemy
    yield url
    drop_database(name)


def test_schema_applies_again_with_psql(empty_database_url: str) -> None:
    libpq_url = empty_database_url.replace("postgresql+psycopg2://", "postgresql://")
    for _ in range(2):
        result = subprocess.run(
            ["psql", libpq_url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(PROJECT_ROOT / "schema.sql")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


def test_models_match_schema(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    try:
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) == set(Base.metadata.tables)
        for table in Base.metadata.sorted_tables:
            reflected = {c["name"]: c for c in inspector.get_columns(table.name)}
            assert set(reflected) == {c.name for c in table.columns}, table.name
            for column in table.columns:
                db_column = reflected[column.name]
                where = f"{table.name}.{column.name}"
                assert db_column["nullable"] == column.nullable, where
                assert db_column["type"].compile(engine.dialect) == column.type.compile(engine.dialect), where
            assert set(inspector.get_pk_constraint(table.name)["constrained_columns"]) == {
                c.name for c in table.primary_key
            }
            db_fks = {
                (tuple(fk["constrained_columns"]), fk["referred_table"])
                for fk in inspector.get_foreign_keys(table.name)
            }
            model_fks = {((fk.parent.name,), fk.column.table.name) for fk in table.foreign_keys}
            assert db_fks == model_fks, table.name
    finally:
        engine.dispose()

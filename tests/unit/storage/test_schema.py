"""schema.sql is the source of truth: it applies (twice) with psql, the tables in storage/tables.py
match it, and it upgrades a database made by the previous release to exactly what it makes from nothing.

``previous_schema.sql`` is the previous release's ``schema.sql`` as shipped
(``git show b8e693f:schema.sql``); replace it with the released file at each release.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text

from harness.services import create_database, drop_database
from storage.db import make_engine
from storage.schema import SCHEMA_FILE, apply_schema
from storage.tables import Base

PREVIOUS_SCHEMA = Path(__file__).with_name("previous_schema.sql")

# Everything in the public schema a schema change can touch, one query per kind: each row says what it is.
CATALOG_QUERIES = {
    "tables": """
        SELECT c.relname, c.relkind::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    """,
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
    """,
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "constraints": """
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'
    """,
    "types": """
        SELECT t.typname, t.typtype::text,
               (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
    """,
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), md5(pg_get_functiondef(p.oid))
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
    """,
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND NOT t.tgisinternal
    """,
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'",
    "extensions": "SELECT extname FROM pg_extension",
}

Catalog = dict[str, set[tuple[object, ...]]]


def catalog(engine: Engine) -> Catalog:
    """What the database's public schema holds: tables, columns, indexes, constraints and the rest, by kind."""
    with engine.connect() as connection:
        return {
            kind: {tuple(row) for row in connection.execute(text(query))} for kind, query in CATALOG_QUERIES.items()
        }


def apply_sql(engine: Engine, sql: str) -> None:
    """Run a whole SQL script in one transaction (``no_parameters``: a ``%`` in it is no placeholder)."""
    with engine.begin() as connection:
        connection.exec_driver_sql(sql, execution_options={"no_parameters": True})


@pytest.fixture()
def new_database() -> Iterator[Callable[[], Engine]]:
    """Make empty databases (no schema applied) on demand; all dropped afterwards."""
    made: list[tuple[str, Engine]] = []

    def make() -> Engine:
        name = f"yolo_schema_{uuid.uuid4().hex[:10]}"
        engine = make_engine(create_database(name, schema=False))
        made.append((name, engine))
        return engine

    yield make
    for name, engine in made:
        engine.dispose()
        drop_database(name)


@pytest.fixture()
def empty_database_url() -> Iterator[str]:
    name = f"yolo_schema_{uuid.uuid4().hex[:10]}"
    url = create_database(name)  # applies schema.sql once through SQLAlchemy
    yield url
    drop_database(name)


def test_schema_applies_again_with_psql(empty_database_url: str) -> None:
    libpq_url = empty_database_url.replace("postgresql+psycopg2://", "postgresql://")
    for _ in range(2):
        result = subprocess.run(
            ["psql", libpq_url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(SCHEMA_FILE)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


def test_tables_match_schema(empty_database_url: str) -> None:
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


def test_previous_release_upgrades_to_the_current_schema(new_database: Callable[[], Engine]) -> None:
    upgraded, fresh = new_database(), new_database()
    apply_sql(upgraded, PREVIOUS_SCHEMA.read_text())
    apply_schema(upgraded)
    apply_schema(fresh)
    expected = catalog(fresh)
    assert expected["tables"] and expected["columns"] and expected["indexes"] and expected["constraints"]
    actual = catalog(upgraded)
    for kind in CATALOG_QUERIES:  # one kind at a time, so a failure names what differs
        assert actual[kind] == expected[kind], kind
    apply_schema(upgraded)  # and the current schema applies again on top of the upgrade
    assert catalog(upgraded) == expected


def test_the_upgrade_gives_every_existing_tenant_a_secret_of_its_own(new_database: Callable[[], Engine]) -> None:
    engine = new_database()
    apply_sql(engine, PREVIOUS_SCHEMA.read_text())
    apply_sql(engine, "INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 'a'), (gen_random_uuid(), 'b');")
    apply_schema(engine)
    with engine.connect() as connection:
        secrets = connection.scalars(text("SELECT webhook_secret FROM tenants")).all()
    assert len(set(secrets)) == 2 and all(s.startswith("whsec_") and len(s) == 50 for s in secrets)


# A toy table's previous release, and current ones written into CREATE TABLE alone, each forgetting
# to upgrade one thing (an ALTER TABLE, a constraint swap, an index swap), with the kind that differs.
TOY_PREVIOUS = """
CREATE TABLE IF NOT EXISTS toys (
    id     integer PRIMARY KEY,
    status text    NOT NULL DEFAULT 'new' CONSTRAINT toys_status_check CHECK (status IN ('new', 'old'))
);
CREATE INDEX IF NOT EXISTS toys_status ON toys (status);
"""
TOY_FORGOTTEN = {
    "new column": ("status text", "colour text NOT NULL DEFAULT 'red',\n    status text", "columns"),
    "new default": ("DEFAULT 'new'", "DEFAULT 'old'", "columns"),
    "dropped NOT NULL": ("text    NOT NULL", "text", "columns"),
    "wider check": ("('new', 'old')", "('new', 'old', 'broken')", "constraints"),
    "renamed constraint": ("CONSTRAINT toys_status_check", "CONSTRAINT toys_status_known", "constraints"),
    "partial index": ("(status);", "(status) WHERE status <> 'old';", "indexes"),
}
TOY_UPGRADE = """
ALTER TABLE toys ADD COLUMN IF NOT EXISTS colour text NOT NULL DEFAULT 'red';
ALTER TABLE toys ALTER COLUMN status SET DEFAULT 'old';
ALTER TABLE toys ALTER COLUMN status DROP NOT NULL;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'toys_status_known') THEN
        ALTER TABLE toys DROP CONSTRAINT IF EXISTS toys_status_check;
        ALTER TABLE toys ADD CONSTRAINT toys_status_known CHECK (status IN ('new', 'old', 'broken'));
    END IF;
END $$;
DROP INDEX IF EXISTS toys_status;
CREATE INDEX IF NOT EXISTS toys_status ON toys (status) WHERE status <> 'old';
"""


@pytest.mark.parametrize("change", TOY_FORGOTTEN)
def test_the_comparison_catches_a_forgotten_upgrade(new_database: Callable[[], Engine], change: str) -> None:
    """A change made in CREATE TABLE alone leaves an upgraded database behind, and the catalogs say where."""
    old, new, kind = TOY_FORGOTTEN[change]
    assert TOY_PREVIOUS.count(old) == 1
    current = TOY_PREVIOUS.replace(old, new)
    upgraded, fresh = new_database(), new_database()
    apply_sql(upgraded, TOY_PREVIOUS)
    apply_sql(upgraded, current)
    apply_sql(fresh, current)
    actual, expected = catalog(upgraded), catalog(fresh)
    assert actual[kind] != expected[kind]
    assert {k for k in CATALOG_QUERIES if actual[k] != expected[k]} == {kind}


def test_the_comparison_passes_an_upgrade_done_right(new_database: Callable[[], Engine]) -> None:
    current = TOY_PREVIOUS
    for old, new, _kind in TOY_FORGOTTEN.values():
        current = current.replace(old, new)
    upgraded, fresh = new_database(), new_database()
    apply_sql(upgraded, TOY_PREVIOUS)
    apply_sql(upgraded, current + TOY_UPGRADE)
    apply_sql(fresh, current + TOY_UPGRADE)
    assert catalog(upgraded) == catalog(fresh)

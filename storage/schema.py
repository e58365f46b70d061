"""Create the database when it is missing and apply ``schema.sql`` (idempotent).

``schema.sql`` is the source of truth and applies again to a database made by any
earlier release. Its convention for changing existing tables: ``ALTER TABLE … ADD COLUMN
IF NOT EXISTS`` for new columns, and constraint swaps (drop the old one by name, add the
new one) inside ``DO`` blocks. A constraint that may be swapped later is named
explicitly: an automatic name can differ between a fresh and an upgraded table.
``tests/unit/storage/test_schema.py`` checks that an upgraded database equals a fresh
one.
"""

from __future__ import annotations

from importlib.resources import files

from sqlalchemy import Engine, text

from storage.db import make_engine, normalize_database_url

# The top-level schema.sql, which storage/schema.sql links to: package data, so an installed wheel carries it.
SCHEMA_FILE = files("storage") / "schema.sql"


def apply_schema(engine: Engine) -> None:
    """Run every statement of ``schema.sql`` in one transaction (idempotent)."""
    sql = SCHEMA_FILE.read_text()
    with engine.begin() as connection:
        connection.exec_driver_sql(sql, execution_options={"no_parameters": True})  # '%' is SQL, not a placeholder


def ensure_database(database_url: str) -> bool:
    """Create the URL's database when it does not exist yet; return whether it was created."""
    url = normalize_database_url(database_url)
    server = make_engine(
        url.set(database="postgres").render_as_string(hide_password=False), isolation_level="AUTOCOMMIT"
    )
    try:
        with server.connect() as connection:
            exists = connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database})
            if not exists:
                quoted = connection.dialect.identifier_preparer.quote(url.database)
                connection.exec_driver_sql(f"CREATE DATABASE {quoted}")
    finally:
        server.dispose()
    return not exists

"""Create the database if needed and apply ``schema.sql``: ``python -m storage.schema``."""

from __future__ import annotations

from sqlalchemy import Engine, text

from storage.db import make_engine, normalize_database_url
from storage.settings import PROJECT_ROOT, Settings

SCHEMA_FILE = PROJECT_ROOT / "schema.sql"


def apply_schema(engine: Engine) -> None:
    """Run every statement of ``schema.sql`` in one transaction (idempotent)."""
    sql = SCHEMA_FILE.read_text()
    with engine.begin() as connection:
        connection.exec_driver_sql(sql)


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


def main() -> None:
    settings = Settings.from_env()
    if ensure_database(settings.database_url):
        print("database created")
    engine = make_engine(settings.database_url)
    try:
        apply_schema(engine)
    finally:
        engine.dispose()
    print(f"schema applied to {engine.url.render_as_string(hide_password=True)}")


if __name__ == "__main__":
    main()

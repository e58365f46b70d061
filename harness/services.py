"""A database, RabbitMQ vhost, Redis db and storage root made for one run alone, removed afterwards."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from config.paths import VAR_DIR
from config.settings import inherited_environment
from storage.db import make_engine, normalize_database_url
from storage.schema import apply_schema, ensure_database

# The services on this machine (see scripts/ensure-services.sh).
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672"
REDIS_URL = "redis://127.0.0.1:6379"


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def create_vhost(name: str) -> str:
    """A fresh RabbitMQ vhost; returns its broker URL."""
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return f"{RABBITMQ_URL}/{name}"


def delete_vhost(name: str) -> None:
    rabbitmqctl("delete_vhost", name)


def database_url(name: str) -> str:
    return normalize_database_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def create_database(name: str, schema: bool = True) -> str:
    """A new database (with ``schema.sql`` applied unless ``schema`` is false); returns its URL."""
    url = database_url(name)
    ensure_database(url)
    if schema:
        engine = make_engine(url)
        try:
            apply_schema(engine)
        finally:
            engine.dispose()
    return url


def drop_database(name: str) -> None:
    server = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        server.dispose()


def set_database_open(name: str, open_: bool) -> None:
    """Refuse (and cut) or allow again every connection to database ``name``: a database outage."""
    admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(open_).lower()}')
            if not open_:
                connection.exec_driver_sql(
                    f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                )
    finally:
        admin.dispose()


def claim_redis_db() -> int:
    """An empty Redis database number (1-15) for this run; flushed again at the end."""
    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_URL}/{number}")
        if client.dbsize() == 0 and client.set("yolo-jobs-test-claim", "1", nx=True):
            return number
    raise RuntimeError("no empty Redis database left for the run")


def release_redis_db(number: int) -> None:
    redis.Redis.from_url(f"{REDIS_URL}/{number}").flushdb()


@contextmanager
def ephemeral_services(name: str, storage_root: Path, **overrides: str) -> Iterator[dict[str, str]]:
    """Environment variables pointing at a database, vhost and Redis db made for ``name`` alone."""
    database, vhost = f"yolo_{name}".replace("-", "_"), f"yolo-{name}".replace("_", "-")
    url = create_database(database)
    broker_url = create_vhost(vhost)
    redis_db = claim_redis_db()
    env = {
        **inherited_environment(),
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": f"{REDIS_URL}/{redis_db}",
        "STORAGE_ROOT": str(storage_root),
        "LOG_FORMAT": "json",
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(VAR_DIR / "ultralytics"),
        "WORKER_METRICS_PORT": "0",
        **overrides,
    }
    try:
        yield env
    finally:
        drop_database(database)
        delete_vhost(vhost)
        release_redis_db(redis_db)

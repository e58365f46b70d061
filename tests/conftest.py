"""Fixtures: each test run gets its own PostgreSQL database, RabbitMQ vhost, Redis db and storage root.

``app``, ``client`` and ``runner`` follow Flask's tutorial; ``api_url`` is a real
gunicorn and ``worker`` a real ``celery -A tasks worker`` subprocess, both
started once per session against the run's services.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support

ARTIFACTS = support.PROJECT_ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def services_env(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment variables pointing at this run's own database, vhost, Redis db and storage."""
    storage_root = tmp_path_factory.mktemp("storage")
    with support.ephemeral_services(f"test_{run_id}", storage_root, SECRET_KEY=f"test-{run_id}") as env:
        yield env


@pytest.fixture(scope="session")
def logs_dir(run_id: str) -> Path:
    path = ARTIFACTS / f"logs-{run_id}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def worker(services_env: dict[str, str], logs_dir: Path) -> Iterator[support.ServiceProcess]:
    """A real Celery worker on both queues, concurrency 2."""
    process = support.start_worker(services_env, logs_dir / "worker.log")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def api_url(services_env: dict[str, str], logs_dir: Path) -> Iterator[str]:
    """Base URL of a real gunicorn serving ``app:create_app()``."""
    server, base_url = support.start_api(services_env, logs_dir / "gunicorn.log")
    yield base_url
    server.stop()


@pytest.fixture()
def isolated_env(services_env: dict[str, str], run_id: str) -> Iterator[dict[str, str]]:
    """The run's services, but with a RabbitMQ vhost of this test's own (no session worker consumes it)."""
    vhost = f"yolo-test-{run_id}-{uuid.uuid4().hex[:6]}"
    env = {**services_env, "CELERY_BROKER_URL": support.create_vhost(vhost)}
    try:
        yield env
    finally:
        support.delete_vhost(vhost)


@pytest.fixture()
def app(services_env: dict[str, str]):  # type: ignore[no-untyped-def]
    from app import create_app

    application = create_app({**services_env, "TESTING": True})
    yield application
    application.extensions["yolo_storage"].dispose()


@pytest.fixture()
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture()
def runner(app):  # type: ignore[no-untyped-def]
    return app.test_cli_runner()


@pytest.fixture()
def storage(services_env: dict[str, str]):  # type: ignore[no-untyped-def]
    from storage import Settings, Storage

    store = Storage(Settings.from_env(services_env))
    yield store
    store.dispose()

"""Fixtures: each test run gets its own PostgreSQL database, RabbitMQ vhost, Redis db and storage root.

``app``, ``client`` and ``runner`` follow Flask's tutorial, built by ``make_app``
(which disposes every app it made). Every app gets an API key of its own, made in
its own database (tenant ``test`` unless asked otherwise), and its test client
sends it as ``Authorization: Bearer`` (``app.test_client(key=None)`` is anonymous).
``api_url`` is a real gunicorn and ``worker`` a real ``celery -A tasks worker``
subprocess, both started once per session against the run's services; ``api`` is
a ``requests`` session carrying the run's key for that gunicorn.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskCliRunner
from kombu import Connection

import celery_config
from app import create_app, extensions
from config import Settings
from config.paths import PROJECT_ROOT
from config.ultralytics import configure_ultralytics_under
from harness import services
from harness.processes import ServiceProcess, start_api, start_worker
from storage import Storage
from tests.helpers import TEST_KEY, TEST_TENANT, KeyClient, TestKey, add_key

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
# The suite submits far more jobs than a person would, from one tenant, and fails authentication far more often,
# from one address; the quota and throttle tests set their own limits.
GENEROUS_QUOTAS = {
    "QUOTA_JOBS_PER_MINUTE": "1000000",
    "QUOTA_ACTIVE_JOBS": "1000000",
    "AUTH_FAILURES_PER_MINUTE": "1000000",
}

MakeApp = Callable[..., Flask]


def pytest_configure(config: pytest.Config) -> None:
    """Tests import the worker's modules, and with them Ultralytics: offline, its settings under var/."""
    configure_ultralytics_under()


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def services_env(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment variables pointing at this run's own database, vhost, Redis db and storage."""
    storage_root = tmp_path_factory.mktemp("storage")
    overrides = {"SECRET_KEY": f"test-{run_id}", **GENEROUS_QUOTAS}
    with services.ephemeral_services(f"test_{run_id}", storage_root, **overrides) as env:
        yield env


@pytest.fixture(scope="session")
def logs_dir(run_id: str) -> Path:
    path = ARTIFACTS / f"logs-{run_id}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def worker(services_env: dict[str, str], logs_dir: Path) -> Iterator[ServiceProcess]:
    """A real Celery worker on both queues, concurrency 2."""
    process = start_worker(services_env, logs_dir / "worker.log")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def api_url(services_env: dict[str, str], logs_dir: Path) -> Iterator[str]:
    """Base URL of a real gunicorn serving ``app:create_app()``."""
    server, base_url = start_api(services_env, logs_dir / "gunicorn.log")
    yield base_url
    server.stop()


@pytest.fixture(scope="session")
def api_key(services_env: dict[str, str]) -> TestKey:
    """A key of tenant ``test`` in the run's database: what ``api`` sends to the real gunicorn."""
    store = open_storage(services_env)
    try:
        return add_key(store, TEST_TENANT, label="session")
    finally:
        store.dispose()


@pytest.fixture(scope="session")
def admin_key(services_env: dict[str, str]) -> TestKey:
    """An admin key (tenant ``operators``) in the run's database, for what only admins see."""
    store = open_storage(services_env)
    try:
        return add_key(store, "operators", admin=True, label="session admin")
    finally:
        store.dispose()


@pytest.fixture(scope="session")
def api(api_key: TestKey) -> Iterator[requests.Session]:
    """A ``requests`` session that sends the run's key (``Authorization: Bearer``) with every request."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {api_key.key}"
        yield session


@pytest.fixture(scope="module")
def module_database_url(run_id: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of the requesting test module's own, with the current schema; dropped after the module."""
    name = f"yolo_test_{run_id}_{request.module.__name__.rsplit('.', 1)[-1]}"
    yield services.create_database(name)
    services.drop_database(name)


class VhostPool:
    """RabbitMQ vhosts for :func:`isolated_env`, made once and reused (``rabbitmqctl`` takes about
    two seconds to make and delete one): a vhost given back has its task queues emptied, so the next
    test finds no message of an earlier one.

    The queues are purged, not deleted: an API process declares them on its first publish only
    (kombu remembers the declaration), so a later app would publish into a queue that is gone.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.made: list[str] = []
        self.free: list[str] = []

    def take(self) -> str:
        """A vhost no worker consumes and no queue holds anything in; returns its broker URL."""
        if self.free:
            return self.free.pop()
        url = services.create_vhost(f"yolo-test-{self.run_id}-{len(self.made)}")
        self.made.append(url)
        return url

    def give_back(self, url: str) -> None:
        with Connection(url) as connection:
            channel = connection.channel()
            for queue in celery_config.QUEUES:
                bound = queue(channel)  # a bound copy: the shared definitions stay unbound
                bound.declare()
                bound.purge()
        self.free.append(url)

    def close(self) -> None:
        for url in self.made:
            services.delete_vhost(url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def vhost_pool(run_id: str) -> Iterator[VhostPool]:
    pool = VhostPool(run_id)
    yield pool
    pool.close()


@pytest.fixture()
def isolated_env(services_env: dict[str, str], vhost_pool: VhostPool) -> Iterator[dict[str, str]]:
    """The run's services, but with a RabbitMQ vhost of this test's own (no session worker consumes it)."""
    url = vhost_pool.take()
    yield {**services_env, "CELERY_BROKER_URL": url}
    vhost_pool.give_back(url)


def keyed_app(settings: Settings, tenant: str | None = TEST_TENANT, admin: bool = False) -> Flask:
    """A testing app whose test client sends a new key of ``tenant`` (made in the app's own database).

    With ``tenant=None`` no key is made (an app whose database is unreachable); its client is anonymous.
    """
    application = create_app(settings, TESTING=True)
    application.test_client_class = KeyClient
    if tenant is not None:
        storage = application.extensions[extensions.EXTENSION].storage
        application.config[TEST_KEY] = add_key(storage, tenant, admin=admin)
    return application


@pytest.fixture()
def make_app(services_env: dict[str, str]) -> Iterator[MakeApp]:
    """Build a testing app from ``env`` (default: the run's services) with variables overridden; disposed after.

    ``tenant`` and ``admin`` choose the key its test client sends (see :func:`keyed_app`).
    """
    made: list[Flask] = []

    def make(
        env: dict[str, str] | None = None, *, tenant: str | None = TEST_TENANT, admin: bool = False, **overrides: str
    ) -> Flask:
        settings = Settings.from_env({**(env or services_env), **overrides})
        application = keyed_app(settings, tenant, admin)
        made.append(application)
        return application

    yield make
    for application in made:
        extensions.dispose(application)


@pytest.fixture()
def app(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.fixture()
def client(app: Flask) -> KeyClient:
    return app.test_client()


@pytest.fixture()
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def open_storage(env: dict[str, str]) -> Storage:
    settings = Settings.from_env(env)
    return Storage(settings.database_url, settings.storage_root)


@pytest.fixture()
def storage(services_env: dict[str, str]) -> Iterator[Storage]:
    store = open_storage(services_env)
    yield store
    store.dispose()

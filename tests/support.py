"""Test helpers: isolated services per run, real worker and gunicorn subprocesses, images."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from PIL import Image

from storage.db import make_engine, normalize_database_url
from storage.schema import apply_schema, ensure_database

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def create_vhost(name: str) -> str:
    """A fresh RabbitMQ vhost for this test run; returns its broker URL."""
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return f"{RABBITMQ_URL}/{name}"


def delete_vhost(name: str) -> None:
    rabbitmqctl("delete_vhost", name)


def create_database(name: str) -> str:
    url = normalize_database_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    ensure_database(url)
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


def claim_redis_db() -> int:
    """An empty Redis database number (1-15) for this run; flushed again at the end."""
    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_URL}/{number}")
        if client.dbsize() == 0 and client.set("yolo-jobs-test-claim", "1", nx=True):
            return number
    raise RuntimeError("no empty Redis database left for the test run")


def release_redis_db(number: int) -> None:
    redis.Redis.from_url(f"{REDIS_URL}/{number}").flushdb()


@contextmanager
def ephemeral_services(name: str, storage_root: Path, **overrides: str) -> Iterator[dict[str, str]]:
    """Environment pointing at a database, vhost and Redis db made for ``name`` alone, removed afterwards."""
    database, vhost = f"yolo_{name}".replace("-", "_"), f"yolo-{name}".replace("_", "-")
    database_url = create_database(database)
    broker_url = create_vhost(vhost)
    redis_db = claim_redis_db()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": f"{REDIS_URL}/{redis_db}",
        "STORAGE_ROOT": str(storage_root),
        "LOG_FORMAT": "json",
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(PROJECT_ROOT / "var" / "ultralytics"),
        "WORKER_METRICS_PORT": "0",
        **overrides,
    }
    try:
        yield env
    finally:
        drop_database(database)
        delete_vhost(vhost)
        release_redis_db(redis_db)


def wait_until(predicate: Any, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class ServiceProcess:
    """A real subprocess (gunicorn, celery worker, beat) in its own process group, logging to a file."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            self.argv, env=self.env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal_group(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group (master and children), as a lost node would."""
        self.signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        self.signal_group(signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def json_log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return lines


def start_worker(
    env: dict[str, str], log_path: Path, queues: str = "inference,maintenance", concurrency: int = 2
) -> ServiceProcess:
    argv = [str(VENV_BIN / "celery"), "-A", "tasks", "worker", "-Q", queues, "-c", str(concurrency)]
    argv += [
        "-E",
        "--loglevel",
        "INFO",
        "-n",
        f"test-{uuid.uuid4().hex[:8]}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    worker = ServiceProcess(argv, env, log_path).start()
    wait_until(lambda: "ready." in worker.log_text() or worker.process.poll() is not None, 60, what="worker ready")
    assert worker.process.poll() is None, worker.log_text()
    return worker


def start_api(env: dict[str, str], log_path: Path) -> tuple[ServiceProcess, str]:
    port = free_port()
    server = ServiceProcess(
        [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:create_app()"],
        {"WEB_CONCURRENCY": "2", **env, "API_BIND": f"127.0.0.1:{port}"},
        log_path,
    ).start()
    base_url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return requests.get(f"{base_url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False

    wait_until(healthy, 30, what="gunicorn /healthz")
    return server, base_url


def wait_for_job(base_url: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll the API until the job is succeeded or failed; return its JSON."""

    def finished() -> dict[str, Any] | None:
        body = requests.get(f"{base_url}/api/v1/jobs/{job_id}", timeout=5).json()
        return body if body["status"] in ("succeeded", "failed") else None

    return wait_until(finished, timeout, interval=0.3, what=f"job {job_id}")


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (its data stays 8x8)."""
    data = bytearray(image_bytes(8, 8, seed=5))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def image_bytes(width: int = 64, height: int = 48, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A small, unique-per-seed image in the given format."""
    image = Image.new("RGB", (width, height), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    image.putpixel((seed % width, (seed // width) % height), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()

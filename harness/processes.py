"""Real subprocesses (gunicorn, celery worker, beat) in their own process groups, and polling.

Each runs from the project root unless given another folder, with an environment
of the caller's (usually a run's own services from :mod:`harness.services`),
logging to a file, so a test can read what it did, stop it gracefully, or SIGKILL
the whole group as a lost node would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from config.paths import PROJECT_ROOT

VENV_BIN = Path(sys.executable).parent
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.2, what: str = "condition") -> T:
    """Call ``predicate`` until it returns something truthy, and return that; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class ServiceProcess:
    """A real subprocess in its own process group, logging to a file."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    # A Celery worker's node name, for control commands meant for it alone (``-d``).
    node: str | None = None
    cwd: Path = PROJECT_ROOT
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.running():
            os.killpg(self.pid, sig)

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
    env: dict[str, str],
    log_path: Path,
    queues: str = "inference,maintenance",
    concurrency: int = 2,
    python: Path = VENV_BIN / "python",
    cwd: Path = PROJECT_ROOT,
) -> ServiceProcess:
    """A real ``celery -A tasks worker``, returned once it logged ``ready.``.

    ``python`` and ``cwd``: another environment's interpreter (its ``celery`` beside it), and where it runs.
    """
    node = f"test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    argv = [str(python.parent / "celery"), "-A", "tasks", "worker", "-Q", queues, "-c", str(concurrency)]
    argv += ["-E", "--loglevel", "INFO", "-n", node, "--without-mingle", "--without-gossip"]
    worker = ServiceProcess(argv, env, log_path, node, cwd).start()
    try:
        wait_until(lambda: "ready." in worker.log_text() or not worker.running(), 60, what="worker ready")
        assert worker.running(), worker.log_text()
    except BaseException:
        worker.stop()
        raise
    return worker


def start_api(
    env: dict[str, str], log_path: Path, python: Path = VENV_BIN / "python", cwd: Path = PROJECT_ROOT
) -> tuple[ServiceProcess, str]:
    """A real gunicorn serving ``app:create_app()`` on a free port; returns it and its base URL.

    ``python`` and ``cwd``: another environment's interpreter, and where it runs (gunicorn puts that on sys.path).
    """
    port = free_port()
    server = ServiceProcess(
        [str(python), "-m", "gunicorn", "-c", "python:gunicorn_config", "app:create_app()"],
        {"WEB_CONCURRENCY": "2", **env, "API_BIND": f"127.0.0.1:{port}"},
        log_path,
        cwd=cwd,
    ).start()
    base_url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:  # the socket listens before the workers have imported the app: a read may time out meanwhile
            return requests.get(f"{base_url}/healthz", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        wait_until(lambda: healthy() or not server.running(), 60, what="gunicorn /healthz")
        assert server.running(), server.log_text()[-3000:]
    except BaseException:
        server.stop()
        raise
    return server, base_url


def start_proxy(env: dict[str, str], api_bind: str, directory: Path, log: Path) -> tuple[ServiceProcess, str]:
    """``python -m proxy`` (nginx) on a free port in front of ``api_bind``; returns it and its base URL."""
    port = free_port()
    proxy_env = {**env, "API_BIND": api_bind, "PROXY_BIND": f"127.0.0.1:{port}"}
    process = ServiceProcess([str(VENV_BIN / "python"), "-m", "proxy", "--dir", str(directory)], proxy_env, log).start()
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert process.running(), process.log_text()
        try:
            requests.get(f"{url}/healthz", timeout=1)
        except requests.ConnectionError:
            return False
        return True

    wait_until(answering, 15, what="nginx")
    return process, url


def wait_for_job(
    api_url: str, job_id: str, timeout: float = 120, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Poll a running API until the job has finished; return its JSON.

    ``headers`` carry the API key (``{"Authorization": "Bearer <key>"}``): every API call needs one.
    """

    def finished() -> dict[str, Any] | None:
        response = requests.get(f"{api_url}/api/v1/jobs/{job_id}", headers=headers, timeout=5)
        response.raise_for_status()
        body = response.json()
        return body if body["status"] in FINISHED_STATUSES else None

    return wait_until(finished, timeout, interval=0.3, what=f"job {job_id}")


def wait_for_flower_to_hear(flower: ServiceProcess, url: str, worker: ServiceProcess, timeout: float = 60) -> None:
    """Wait until Flower at ``url`` reports ``worker`` online (its ``/metrics``): its events reach Flower."""

    def heard() -> bool:
        assert flower.running(), flower.log_text()[-3000:]
        try:
            metrics = requests.get(f"{url}/metrics", timeout=2).text
        except requests.ConnectionError:
            return False
        return f'flower_worker_online{{worker="{worker.node}"}} 1.0' in metrics

    wait_until(heard, timeout, what="Flower hearing the worker")

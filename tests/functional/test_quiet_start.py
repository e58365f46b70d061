"""``make run`` starts quietly: what it prints is what a user needs to read, and a warning is a real one (issue 27).

Three warnings came with every start or upload, none of them about something wrong:

- nginx's "a client request body is buffered to a temporary file", on nearly every upload: bodies go to temp
  files by design (proxy/nginx.conf.in says why), and nginx is told so;
- Celery's SecurityWarning that the worker runs as root, on a developer's machine where everything does: the
  Makefile's local worker filters that one warning (the image runs as a non-root user);
- Flower's "Inspect method … failed", asked of a worker not up yet: ``make run`` starts Flower once a worker
  answers (``python -m scripts.await_worker``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from config.paths import PROJECT_ROOT
from harness.images import image_bytes
from harness.processes import ServiceProcess, start_proxy, start_worker
from tests.helpers import TestKey

SUPERUSER_WARNING = "You're running the worker with superuser privileges"


def make_variable(name: str) -> str:
    """A variable's value as the Makefile defines it (``NAME := value``)."""
    (line,) = [line for line in (PROJECT_ROOT / "Makefile").read_text().splitlines() if line.startswith(f"{name} :=")]
    return line.split(":=", 1)[1].strip()


def command_environment(command: str) -> dict[str, str]:
    """The ``NAME=value`` assignments a Makefile command starts with."""
    words = shlex.split(command)
    assignments = words[: next(i for i, word in enumerate(words) if "=" not in word)]
    return dict(word.split("=", 1) for word in assignments)


def test_an_upload_and_its_download_through_the_proxy_log_no_warning(
    services_env: dict[str, str], api_url: str, api_key: TestKey, logs_dir: Path, tmp_path: Path
) -> None:
    """A 1 MB upload (past client_body_buffer_size, 128 KiB) and the file back: nginx logs nothing at warn."""
    log = logs_dir / f"nginx-quiet-{uuid.uuid4().hex[:8]}.log"
    proxy, url = start_proxy(services_env, api_url.removeprefix("http://"), tmp_path / "nginx", log)
    try:
        data = image_bytes(600, 600, seed=uuid.uuid4().int % 10**6, fmt="BMP")
        assert len(data) > 1_000_000
        files = [("image", ("big.bmp", data, "application/octet-stream"))]
        created = requests.post(f"{url}/api/v1/jobs", files=files, headers=api_key.headers, timeout=30)
        assert created.status_code == 202, created.text
        file_id = created.json()["files"][0]["file_id"]
        content = requests.get(f"{url}/api/v1/files/{file_id}/content", headers=api_key.headers, timeout=30)
        assert content.status_code == 200 and content.content == data
        time.sleep(0.2)  # nginx writes its log line as the request ends
    finally:
        proxy.stop()
    assert "[warn]" not in proxy.log_text() and "[error]" not in proxy.log_text(), proxy.log_text()[-3000:]


def test_the_local_worker_starts_without_the_superuser_warning(services_env: dict[str, str], logs_dir: Path) -> None:
    """The Makefile's WORKER_CMD (``make run``, ``make worker``) filters Celery's warning that the worker runs
    as root; run as root without the filter, Celery gives it (the control)."""
    filtered = command_environment(make_variable("WORKER_CMD"))
    assert filtered, "WORKER_CMD sets the warning filter"
    worker = start_worker({**services_env, **filtered}, logs_dir / "worker-quiet.log", "maintenance", concurrency=1)
    worker.stop()
    assert "ready." in worker.log_text() and "SecurityWarning" not in worker.log_text(), worker.log_text()[-3000:]
    probe = "from celery.platforms import check_privileges; check_privileges(['json'])"
    control = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (SUPERUSER_WARNING in control.stderr) == (os.geteuid() == 0), control.stderr


def await_worker(env: dict[str, str], seconds: float) -> tuple[float, str]:
    """``python -m scripts.await_worker SECONDS``: how long it took, and what it printed."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "scripts.await_worker", str(seconds)],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started, done.stdout + done.stderr


def test_flower_waits_for_a_worker_to_answer(
    services_env: dict[str, str], isolated_env: dict[str, str], worker: ServiceProcess
) -> None:
    """With the session's worker up it returns at once, silently; with none, after its time, saying so."""
    took, said = await_worker(services_env, 30)
    assert took < 15 and said == "", said
    took, said = await_worker(isolated_env, 2)
    assert took >= 2 and "no Celery worker answered in 2 s; Flower starts without one" in said, said


def test_make_run_starts_flower_after_await_worker() -> None:
    run_recipe = (PROJECT_ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "'flower: $(BIN)/python -m scripts.await_worker; $(FLOWER_CMD)'" in run_recipe

"""The API and the CPU worker run from their roles' installs alone, with no torch: a real job goes through them,
and beat and Flower run beside them.

Each venv gets what its image installs (the Containerfile's target, read by ``containerfile_support``): the
service's wheel with the role's extras, and the worker's dependency-less requirements. pip resolves them
from the configured index through the machine's pip cache, so a warm cache makes this a minute or two of
installing (most of it the CPU worker's OpenVINO, ONNX Runtime and OpenCV), done once per module. The wheel
is built from a copy of what the repository holds (``copy_repository``), so the checkout is never built in.

The venvs run where the checkout is on no path, as in the images: gunicorn from the API's venv; Celery workers,
beat and Flower from the CPU worker's (the image of every pod but the API's and the GPU workers'). They use the
run's services on a vhost and a database of the module's own. No session worker takes their tasks, and the
installed service registers the bundled model at its own path (the wheel's copy) where no other test of the
process reads it. So the job's images are new to the database, nothing is answered from an earlier result, and
the CPU worker runs the model from its OpenVINO export, without torch.
"""

from __future__ import annotations

import io
import os
import subprocess
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from harness.processes import (
    ServiceProcess,
    free_port,
    start_api,
    start_worker,
    wait_for_flower_to_hear,
    wait_for_job,
    wait_until,
)
from harness.scenes import recall
from inference.backends import OPENVINO
from jobs.messages import DETECT_TASK
from storage import Storage
from tests.conftest import VhostPool, open_storage
from tests.functional.containerfile_support import role_install
from tests.functional.distribution_support import COMMAND_TIMEOUT_S, off_the_checkout, pip
from tests.functional.test_service_distribution import copy_repository
from tests.helpers import TEST_TENANT, TestKey, add_key, post_job
from training.shapes import render_sample

ROLES = ("api", "worker-cpu")
# What only the GPU worker installs: torch, its CUDA libraries and triton, and Ultralytics.
GPU_ONLY = {"torch", "torchvision", "triton", "ultralytics", "ultralytics-opencv-headless"}
SEED = 2808  # the shapes of this module alone: no other test submits them, so none is a reused result
IMAGES = 3
MIN_RECALL = 0.9
DISTRIBUTIONS = "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"


@dataclass(frozen=True)
class RoleVenv:
    """A venv holding one role's install, and the empty folder its commands run in."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @property
    def workdir(self) -> Path:
        return self.root / "work"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python), *args],
            env=off_the_checkout(os.environ),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )

    def distributions(self) -> set[str]:
        result = self.run("-c", DISTRIBUTIONS)
        assert result.returncode == 0, result.stderr
        return {name.lower() for name in result.stdout.split()}


def install_role(wheel: Path, root: Path, target: str) -> RoleVenv:
    """A new venv (no pip: only what the install brings) with the Containerfile ``target``'s install."""
    role = RoleVenv(root)
    venv.EnvBuilder(with_pip=False).create(root / "venv")
    role.workdir.mkdir()
    install = role_install(target)
    pip("--python", str(role.python), "install", f"{wheel}[{','.join(install.extras)}]", cwd=root)
    if install.no_deps:
        pip("--python", str(role.python), "install", "--no-deps", *install.no_deps, cwd=root)
    return role


@pytest.fixture(scope="module")
def role_venvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RoleVenv]:
    root = tmp_path_factory.mktemp("role-installs")
    copy_repository(root / "source")
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(root / "dist"), str(root / "source"), cwd=root)
    (wheel,) = (root / "dist").glob("*.whl")
    return {target: install_role(wheel, tmp_path_factory.mktemp(target), target) for target in ROLES}


@pytest.fixture(scope="module")
def role_env(services_env: dict[str, str], vhost_pool: VhostPool, module_database_url: str) -> Iterator[dict[str, str]]:
    """The run's services on a vhost and a database of the module's own, without the checkout on any path."""
    url = vhost_pool.take()
    yield off_the_checkout({**services_env, "CELERY_BROKER_URL": url, "DATABASE_URL": module_database_url})
    vhost_pool.give_back(url)


@pytest.fixture(scope="module")
def role_storage(role_env: dict[str, str]) -> Iterator[Storage]:
    store = open_storage(role_env)
    yield store
    store.dispose()


@pytest.mark.parametrize("target", ROLES)
def test_torch_is_not_installed(role_venvs: dict[str, RoleVenv], target: str) -> None:
    role = role_venvs[target]
    result = role.run("-c", "import torch")
    assert result.returncode == 1 and "No module named 'torch'" in result.stderr, result.stderr
    installed = role.distributions()
    assert installed & GPU_ONLY == set()
    assert not [name for name in installed if name.startswith("nvidia-")], "CUDA's libraries"
    if target == "api":
        assert not [name for name in installed if name.startswith("opencv")], "the API never imports cv2"


def shape_pictures() -> list[tuple[str, bytes, list[tuple[int, float, float, float, float]]]]:
    """The job's images: each one's name, PNG bytes and ground truth (class index and box)."""
    pictures = []
    for index in range(IMAGES):
        image, shapes = render_sample(seed=SEED, index=index)
        data = io.BytesIO()
        image.save(data, format="PNG")
        pictures.append((f"{index}.png", data.getvalue(), [(s.cls, *s.box) for s in shapes]))
    return pictures


def test_a_job_runs_through_the_api_and_cpu_worker_installs(
    role_venvs: dict[str, RoleVenv],
    role_env: dict[str, str],
    role_storage: Storage,
    logs_dir: Path,
) -> None:
    api, worker = role_venvs["api"], role_venvs["worker-cpu"]
    key: TestKey = add_key(role_storage, TEST_TENANT)
    server, url = start_api(role_env, logs_dir / "role-api.log", python=api.python, cwd=api.workdir)
    process = start_worker(
        role_env, logs_dir / "role-worker.log", concurrency=1, python=worker.python, cwd=worker.workdir
    )
    try:
        pictures = shape_pictures()
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {key.key}"
            response = post_job(session, url, [(name, data) for name, data, _truth in pictures])
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]
            job = wait_for_job(url, job_id, headers=session.headers)
    finally:
        process.stop()
        server.stop()

    assert job["status"] == "succeeded", job
    assert any(DETECT_TASK in line and "succeeded" in line for line in process.log_text().splitlines())
    results = {result["filename"]: result for result in job["results"]}
    for name, _data, truth in pictures:
        result = results[name]
        assert result["error"] is None and result["cached"] is False, result
        found = [(d["class"], *(d["box"][k] for k in ("x1", "y1", "x2", "y2"))) for d in result["detections"]]
        assert recall(found, truth) >= MIN_RECALL, (name, found, truth)
    with role_storage.database.engine.connect() as connection:
        backends = connection.scalars(text("SELECT DISTINCT backend FROM results WHERE job_id = :id"), {"id": job_id})
        assert set(backends) == {OPENVINO}


def test_beat_and_flower_run_from_the_cpu_worker_install(
    role_venvs: dict[str, RoleVenv], role_env: dict[str, str], logs_dir: Path
) -> None:
    """The rest of a CPU deployment takes the CPU worker's image: beat's schedule reaches a worker of that install
    (the retention cleanup, every 2 s here), and Flower, with the ``ops`` extra the image adds, hears the worker."""
    role = role_venvs["worker-cpu"]
    celery = str(role.python.parent / "celery")
    env = {**role_env, "RETENTION_CLEANUP_INTERVAL_SECONDS": "2"}
    port = free_port()
    worker = start_worker(env, logs_dir / "role-maintenance.log", "maintenance", 1, role.python, role.workdir)
    beat_argv = [celery, "-A", "tasks", "beat", "--schedule", str(role.root / "beat-schedule"), "--loglevel", "INFO"]
    flower_argv = [celery, "-A", "tasks", "flower", "--address=127.0.0.1", f"--port={port}"]
    beat = ServiceProcess(beat_argv, env, logs_dir / "role-beat.log", cwd=role.workdir).start()
    flower = ServiceProcess(flower_argv, env, logs_dir / "role-flower.log", cwd=role.workdir).start()

    try:
        wait_until(
            lambda: "retention cleanup done" in worker.log_text() or not beat.running(), 60, what="beat's cleanup"
        )
        assert beat.running(), beat.log_text()[-3000:]
        wait_for_flower_to_hear(flower, f"http://127.0.0.1:{port}", worker)
    finally:
        for process in (flower, beat, worker):
            process.stop()
    assert "Traceback" not in beat.log_text() + flower.log_text()

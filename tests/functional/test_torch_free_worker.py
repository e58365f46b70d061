"""A CPU worker with no PyTorch and no Ultralytics, as the ``worker-cpu`` install runs: it imports what it runs,
detects with the bundled model's OpenVINO export, and refuses a ``.pt`` model in one line saying what to do.

torch, torchvision and ultralytics are made unimportable in every process of the worker: a ``sitecustomize``
first on ``PYTHONPATH`` sets their ``sys.modules`` entries to None, Python's own way of blocking an import
(``import torch`` raises ModuleNotFoundError and ``importlib.util.find_spec`` answers None, as where they are not
installed), and the pool's children inherit that over fork. Any import of them on the worker's path, at import
time or at run time, would fail the worker or its job. ``tests/functional/test_role_installs.py`` runs a job
through real per-role venvs; this runs the checkout's code in the test venv, in seconds.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from config.paths import BUNDLED_MODEL, PROJECT_ROOT
from harness.processes import ServiceProcess, start_worker, wait_until
from harness.scenes import recall
from inference.backends import GPU_INSTALL, OPENVINO, openvino_export_of
from storage import Storage
from tests.conftest import MakeApp, open_storage
from tests.helpers import finished_job, submit
from training.shapes import render_sample

BLOCKED = ("torch", "torchvision", "ultralytics")
# What a CPU worker imports: the tasks and every layer under them (never app/ or proxy/).
WORKER_PACKAGES = ("tasks", "inference", "video", "jobs", "files", "storage", "webhooks", "accounts", "resumable")
SEED = 2829  # shapes no other test submits: no result is reused from an earlier job
IMAGES = 2
MIN_RECALL = 0.9

SITECUSTOMIZE = f"""
# Makes PyTorch and Ultralytics unimportable in this process and its forks, as where they are not installed.
import sys

for name in {BLOCKED!r}:
    sys.modules[name] = None
"""

# Imports every module of the worker's packages but commands, then runs what imports supervision and trackers.
PROBE = f"""
import importlib, importlib.util, pkgutil, sys
import celery_config

names = []
for package in {WORKER_PACKAGES!r}:
    names += [info.name for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + ".")]
for name in names:
    if not name.endswith(".__main__"):  # a command, run when imported
        importlib.import_module(name)
from inference.tiles import merge
from video.tracks import new_tracker

box = {{"name": "circle", "class": 0, "confidence": 0.9, "box": {{"x1": 0.0, "y1": 0.0, "x2": 10.0, "y2": 10.0}}}}
assert len(merge([box, {{**box, "confidence": 0.8}}], 0.5)) == 1
new_tracker(30.0)
try:
    import torch
except ModuleNotFoundError:
    print("torch unimportable")
print("found", [name for name in {BLOCKED!r} if importlib.util.find_spec(name) is not None])
print("imported", len(names))
"""


@pytest.fixture(scope="module")
def no_torch_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A ``PYTHONPATH`` whose ``sitecustomize`` blocks PyTorch and Ultralytics, before the inherited one."""
    folder = tmp_path_factory.mktemp("no-torch")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder.as_posix()


def without_torch(env: dict[str, str], no_torch_path: str) -> dict[str, str]:
    inherited = env.get("PYTHONPATH")
    return {**env, "PYTHONPATH": f"{no_torch_path}:{inherited}" if inherited else no_torch_path}


def test_every_module_of_the_worker_imports_without_torch(services_env: dict[str, str], no_torch_path: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=without_torch(services_env, no_torch_path),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "torch unimportable" in lines and "found []" in lines, result.stdout
    assert int(lines[-1].split()[1]) > 50, "the packages' modules were walked"


@pytest.fixture(scope="module")
def plain(services_env: dict[str, str]) -> Path:
    """The bundled weights alone on the shared volume, with no export beside them: only PyTorch could run them."""
    folder = Path(services_env["STORAGE_ROOT"]) / "models" / f"torch-free-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    return Path(shutil.copyfile(BUNDLED_MODEL, folder / "plain.pt"))


@pytest.fixture()
def env(isolated_env: dict[str, str], module_database_url: str, no_torch_path: str, plain: Path) -> dict[str, str]:
    """A database of the module's own: the models it registers are listed to no other test."""
    models = f"shapes={BUNDLED_MODEL},pt-only={plain}"
    return {**without_torch(isolated_env, no_torch_path), "DATABASE_URL": module_database_url, "YOLO_MODELS": models}


@pytest.fixture()
def storage(env: dict[str, str]) -> Iterator[Storage]:
    store = open_storage(env)
    yield store
    store.dispose()


@pytest.fixture()
def torch_free_worker(env: dict[str, str], logs_dir: Path) -> Iterator[ServiceProcess]:
    worker = start_worker(env, logs_dir / "worker-torch-free.log", queues="inference", concurrency=1)
    yield worker
    worker.stop()


def png(image: Image.Image) -> bytes:
    data = io.BytesIO()
    image.save(data, format="PNG")
    return data.getvalue()


def test_a_torch_free_worker_detects_on_openvino_and_refuses_a_pt_model_saying_what_to_do(
    make_app: MakeApp, env: dict[str, str], storage: Storage, plain: Path, torch_free_worker: ServiceProcess
) -> None:
    app = make_app(env, tenant="operators", admin=True)
    # The same weights registered while the worker runs: loaded, and refused, on their first job.
    late = f"late-{uuid.uuid4().hex[:6]}"
    registered = app.test_client().post("/api/v1/models", json={"name": late, "weights": str(plain)})
    assert registered.status_code == 201, registered.get_json()
    samples = [render_sample(seed=SEED, index=index) for index in range(IMAGES)]
    detected = submit(app, [png(image) for image, _shapes in samples], model="shapes")
    other = png(render_sample(seed=SEED, index=IMAGES)[0])
    refused = {name: submit(app, [other], model=name) for name in ("pt-only", late)}
    job = wait_until(lambda: finished_job(storage, detected), 60, what="the shapes job")
    failed = {name: wait_until(lambda j=j: finished_job(storage, j), 60, what=name) for name, j in refused.items()}
    log = torch_free_worker.log_text()

    assert job.status == "succeeded", (job.error_code, job.error_message)
    for upload, (_image, shapes) in zip(sorted(job.uploads, key=lambda u: u.position), samples, strict=True):
        result = upload.result
        assert result is not None and result.backend == OPENVINO and result.cached is False
        found = [(d["class"], *(d["box"][k] for k in ("x1", "y1", "x2", "y2"))) for d in result.detections]
        assert recall(found, [(s.cls, *s.box) for s in shapes]) >= MIN_RECALL, (found, shapes)
    assert f"backend={OPENVINO} from={openvino_export_of(str(BUNDLED_MODEL))} device=cpu" in log

    for name, refusal in failed.items():
        assert (refusal.status, refusal.error_code) == ("failed", "model_unavailable"), name
        message = refusal.error_message or ""
        assert message.startswith(f"model {name!r} cannot run on this worker: {plain} runs through"), message
        assert GPU_INSTALL in message and f"python -m inference.export {plain} makes it" in message
    # At start-up, the preload of YOLO_MODELS' models said the same in one line (one pool process).
    said = [line for line in log.splitlines() if "model unavailable name=pt-only" in line]
    assert len(said) == 1 and GPU_INSTALL in said[0] and "python -m inference.export" in said[0], said
    assert "Traceback" not in log and "runs on PyTorch" not in log

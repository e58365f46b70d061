"""The client is a distribution of its own (``yolo_jobs_client/pyproject.toml``): its wheel holds the client's
modules and nothing else, and installed into a bare venv, where no server package can be imported, its
``yolo-jobs`` command sends a file by tus (tuspy and what it needs came with the wheel), submits it with
images to a real gunicorn and Celery worker, and exports what they found."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from config.paths import PROJECT_ROOT
from harness.images import image_bytes
from harness.processes import ServiceProcess
from storage import Storage
from tests.functional.distribution_support import COMMAND_TIMEOUT_S, install_in_bare_venv, off_the_checkout
from tests.helpers import add_key

CLIENT_FOLDER = PROJECT_ROOT / "yolo_jobs_client"
# What the server needs and the client must not: the third-party ones, and the server's own top-level packages.
SERVER_PACKAGES = ("flask", "celery", "sqlalchemy", "psycopg2", "app", "tasks", "jobs", "storage")


@dataclass(frozen=True)
class ClientInstall:
    """The client's wheel, built from a copy of its folder, and a bare venv it was installed into."""

    wheel: Path
    venv: Path
    workdir: Path  # where the venv's commands run: an empty folder, so neither the checkout nor the copy is on sys.path

    def run(self, command: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / command), *args],
            env=env or clean_env(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would point a command at the checkout or a server."""
    return {k: v for k, v in off_the_checkout(os.environ).items() if not k.startswith("YOLO_")} | extra


@pytest.fixture(scope="module")
def client_install(tmp_path_factory: pytest.TempPathFactory) -> ClientInstall:
    root = tmp_path_factory.mktemp("client-distribution")
    # A copy holds the build's outputs (build/, *.egg-info) out of the checkout, and proves the folder builds alone.
    source = root / "yolo_jobs_client"
    shutil.copytree(CLIENT_FOLDER, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    bare = install_in_bare_venv(source, root)  # with its dependencies, from pip's configured index
    return ClientInstall(bare.wheel, bare.venv, bare.workdir)


def test_the_wheel_holds_only_the_client_modules(client_install: ClientInstall) -> None:
    with zipfile.ZipFile(client_install.wheel) as wheel:
        names = {name for name in wheel.namelist() if ".dist-info/" not in name}
    assert names == {f"yolo_jobs_client/{module.name}" for module in CLIENT_FOLDER.glob("*.py")}


def test_the_venv_has_the_client_and_no_server_package(client_install: ClientInstall) -> None:
    probe = (
        "import importlib.util, json, sys;"
        "print(json.dumps({name: importlib.util.find_spec(name) is not None for name in sys.argv[1:]}));"
        "print(importlib.util.find_spec('yolo_jobs_client').origin)"
    )
    result = client_install.run("python", "-c", probe, *SERVER_PACKAGES)
    assert result.returncode == 0, result.stderr
    found, client_origin = result.stdout.splitlines()
    assert json.loads(found) == dict.fromkeys(SERVER_PACKAGES, False)
    assert Path(client_origin).is_relative_to(client_install.venv)

    usage = client_install.run("yolo-jobs", "--help")
    assert usage.returncode == 0, usage.stderr
    assert usage.stdout.startswith("usage: yolo-jobs")
    commands = ("upload", "submit", "rerun", "status", "export", "delete", "models")
    assert all(command in usage.stdout for command in commands)


def test_the_installed_command_uploads_submits_and_exports(
    api_url: str, worker: ServiceProcess, storage: Storage, client_install: ClientInstall, tmp_path: Path
) -> None:
    key = add_key(storage, f"client-dist-{uuid.uuid4().hex[:8]}")
    env = clean_env(YOLO_JOBS_URL=api_url, YOLO_JOBS_API_KEY=key.key)
    photos = tmp_path / "photos"
    photos.mkdir()
    for n in range(2):
        (photos / f"{n}.png").write_bytes(image_bytes(32, 24, seed=31_000 + n))
    stored = tmp_path / "stored.png"
    stored.write_bytes(image_bytes(32, 24, seed=31_002))
    state = str(tmp_path / "state" / "uploads.json")
    uploaded = client_install.run("yolo-jobs", "upload", str(stored), "--state-file", state, env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    file_id, sha256, _ = uploaded.stdout.strip().split("\t")
    assert sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
    out = tmp_path / "coco.json"
    submitted = client_install.run(
        "yolo-jobs",
        "submit",
        str(photos),
        "--file-id",
        file_id,
        "--imgsz",
        "64",
        "--export",
        "coco",
        "--out",
        str(out),
        env=env,
    )
    assert submitted.returncode == 0, submitted.stderr
    made, finished = (line.split("\t") for line in submitted.stdout.splitlines())
    assert made[1:] == ["queued", "3 files"]
    assert finished == [made[0], "succeeded", "3/3"]
    images = sorted(image["file_name"] for image in json.loads(out.read_text())["images"])
    assert images == ["0.png", "1.png", "stored.png"]

    status = client_install.run("yolo-jobs", "status", made[0], env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "succeeded"

"""The service's distribution (setup.cfg) is what the image installs (Containerfile): its wheel holds the service's
packages, ``schema.sql`` and the bundled model, and none of the tools; installed where the checkout is on no path,
as in the image, it applies its schema, serves the API from its own packages, and (with PyTorch, as a
``worker-gpu`` install) exports its model.

The wheel is built from a copy of what the repository holds, with the venv's setuptools (no build isolation, so
no download). The venv it goes into has no pip and gets the wheel alone; a ``.pth`` file lends it the test venv's
site-packages for the third-party packages, without that venv's editable install (``.pth`` files in a folder named
by another ``.pth`` are not read), so nothing can import from the checkout. About 25 s of work (35 s on a busy
2-core machine), most of it the model's export.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import inspect

from config.paths import BUNDLED_MODEL, PROJECT_ROOT
from harness.processes import start_api
from harness.services import create_database, drop_database
from jobs.messages import (
    CLEANUP_TASK,
    DELIVER_WEBHOOK_TASK,
    DETECT_TASK,
    PART_TASK,
    REAP_TASK,
    SWEEP_UPLOADS_TASK,
    SWEEP_WEBHOOKS_TASK,
)
from storage.db import make_engine
from storage.tables import Base
from tests.functional.distribution_support import COMMAND_TIMEOUT_S, install_in_bare_venv, off_the_checkout

SERVICE_PACKAGES = {
    "accounts",
    "app",
    "config",
    "files",
    "inference",
    "jobs",
    "models",
    "proxy",
    "resumable",
    "storage",
    "tasks",
    "video",
    "webhooks",
}
SERVICE_MODULES = {"celery_config.py", "gunicorn_config.py"}
TOOLS = ("harness", "training", "evaluation", "bench", "scripts", "tests", "yolo_jobs_client")
SCHEMA = "storage/schema.sql"
WEIGHTS = f"models/{BUNDLED_MODEL.name}"
# The OpenVINO export CPU workers run, kept beside the weights (setup.cfg's package_data ships it).
EXPORT = {
    f"models/{BUNDLED_MODEL.stem}_openvino_model/{name}"
    for name in ("metadata.yaml", "shapes-yolov8n.xml", "shapes-yolov8n.bin")
}

# Run by the installed venv's python: where each of the service's modules and its data were found.
PROBE = """
import importlib.util, json, sys
from config import Settings
from config.paths import BUNDLED_MODEL
from storage.schema import SCHEMA_FILE
from tasks.celery import celery_app
celery_app.loader.import_default_modules()  # what a worker imports: every task module, celery_config with them
print(json.dumps({
    "origins": {name: importlib.util.find_spec(name).origin for name in sys.argv[1].split(",")},
    "tools": [name for name in sys.argv[2].split(",") if importlib.util.find_spec(name) is not None],
    "weights": str(BUNDLED_MODEL),
    "configured_weights": Settings.from_env({}).models["shapes"],
    "schema": str(SCHEMA_FILE),
    "tasks": sorted(name for name in celery_app.tasks if name.startswith("tasks.")),
}))
"""


@dataclass(frozen=True)
class ServiceInstall:
    """The service's wheel, the copy it was built from, and a venv it was installed into."""

    source: Path
    wheel: Path
    venv: Path
    workdir: Path  # where the venv's commands run: an empty folder, so neither the checkout nor the copy is on sys.path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        return Path(sysconfig.get_path("purelib", vars={"base": str(self.venv)}))

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python), *args],
            env=off_the_checkout(os.environ) | env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )


def copy_repository(destination: Path) -> None:
    """What the repository holds (its files and the new ones git does not ignore), links kept as links."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if os.path.lexists(PROJECT_ROOT / name):  # a file deleted in the worktree is still listed until committed
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, destination / name, follow_symlinks=False)


@pytest.fixture(scope="module")
def service_install(tmp_path_factory: pytest.TempPathFactory) -> ServiceInstall:
    root = tmp_path_factory.mktemp("service-distribution")
    source = root / "source"
    copy_repository(source)
    bare = install_in_bare_venv(source, root, build=["--no-build-isolation"], install=["--no-deps", "--no-index"])
    install = ServiceInstall(source, bare.wheel, bare.venv, bare.workdir)
    (install.site_packages / "yolo-jobs-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return install


def test_the_wheel_holds_the_service_and_its_data_alone(service_install: ServiceInstall) -> None:
    with zipfile.ZipFile(service_install.wheel) as wheel:
        names = {name for name in wheel.namelist() if ".dist-info/" not in name}
        tops = {name.split("/")[0] for name in names}
        assert not tops & set(TOOLS), "the tools stay in the checkout"
        assert tops == SERVICE_PACKAGES | SERVICE_MODULES
        shipped = {name: wheel.read(name) for name in (SCHEMA, WEIGHTS)}

    source = service_install.source
    modules = {
        p.relative_to(source).as_posix() for package in SERVICE_PACKAGES for p in (source / package).rglob("*.py")
    }
    assert modules <= names, f"modules left out: {sorted(modules - names)}"
    pages = {
        p.relative_to(source).as_posix()
        for folder in ("templates", "static")
        for p in (source / "app" / folder).rglob("*")
        if p.is_file()
    }
    assert names - modules - SERVICE_MODULES == {SCHEMA, WEIGHTS, *EXPORT, "proxy/nginx.conf.in", *pages}
    # The wheel carries the files themselves: storage/schema.sql is a link to the top-level one in the checkout.
    assert shipped[SCHEMA] == (PROJECT_ROOT / "schema.sql").read_bytes()
    assert shipped[WEIGHTS] == BUNDLED_MODEL.read_bytes()


def test_the_installed_service_finds_its_own_modules_and_data(service_install: ServiceInstall) -> None:
    top_level = sorted(SERVICE_PACKAGES - {"models"} | {name.removesuffix(".py") for name in SERVICE_MODULES})
    result = service_install.run("-c", PROBE, ",".join(top_level), ",".join(TOOLS))
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)

    site = service_install.site_packages
    assert {name: Path(origin).is_relative_to(site) for name, origin in found["origins"].items()} == dict.fromkeys(
        top_level, True
    ), found["origins"]
    assert found["tools"] == [], "the checkout is on the installed service's path"
    assert found["weights"] == found["configured_weights"] == str(site / WEIGHTS)
    assert found["schema"] == str(site / SCHEMA)
    assert found["tasks"] == sorted(
        [CLEANUP_TASK, DELIVER_WEBHOOK_TASK, DETECT_TASK, REAP_TASK, SWEEP_UPLOADS_TASK, PART_TASK, SWEEP_WEBHOOKS_TASK]
    )


def test_the_installed_service_applies_its_schema(service_install: ServiceInstall) -> None:
    """The schema Job's command (openshift/): it finds schema.sql in the installed package."""
    name = f"yolo_wheel_{uuid.uuid4().hex[:10]}"
    url = create_database(name, schema=False)
    try:
        result = service_install.run("-m", "storage.maintenance", "schema", DATABASE_URL=url)
        assert result.returncode == 0, result.stderr
        assert "schema applied" in result.stdout
        engine = make_engine(url)
        try:
            assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
    finally:
        drop_database(name)


def test_the_installed_service_exports_its_bundled_model(service_install: ServiceInstall, tmp_path: Path) -> None:
    """``python -m inference.export`` of an installed service (a ``worker-gpu`` install, which has PyTorch): the
    bundled model's export, beside the installed weights."""
    result = service_install.run("-m", "inference.export", YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    export = service_install.site_packages / "models" / f"{BUNDLED_MODEL.stem}_openvino_model"
    assert result.stdout.splitlines()[-1] == str(export)
    assert (export / "metadata.yaml").is_file()


def test_the_installed_service_serves_the_api(
    service_install: ServiceInstall, services_env: dict[str, str], logs_dir: Path
) -> None:
    """The image's CMD, gunicorn with the installed ``gunicorn_config``: the app, its pages and its static files."""
    server, base_url = start_api(
        off_the_checkout(services_env),
        logs_dir / "installed-gunicorn.log",
        python=service_install.python,
        cwd=service_install.workdir,
    )
    try:
        assert requests.get(f"{base_url}/healthz", timeout=10).ok
        page = requests.get(f"{base_url}/sign-in", timeout=10)
        assert page.status_code == 200 and "<form" in page.text
        assert requests.get(f"{base_url}/static/style.css", timeout=10).status_code == 200
    finally:
        server.stop()

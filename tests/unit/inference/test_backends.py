"""Which runtime a registry entry runs on, the fallback to the .pt weights when its export is unusable, and the
refusal, in one line saying what to install or export, of what needs PyTorch where it is not installed.

PyTorch is made unimportable the way Python blocks an import: its ``sys.modules`` entry set to None (``import
torch`` raises ModuleNotFoundError, ``importlib.util.find_spec`` answers None), restored after the test.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import sys
from pathlib import Path

import pytest

from config.paths import PROJECT_ROOT
from inference.backends import (
    CPU_INSTALL,
    GPU_INSTALL,
    ONNX,
    OPENVINO,
    PYTORCH,
    SOURCE_DIGEST,
    ULTRALYTICS,
    Choice,
    NeedsPyTorch,
    backend_of,
    choose,
    load,
    openvino_export_of,
)


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights")
    return path


@pytest.fixture
def without_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)


def make_export(weights: Path, age_seconds: float = 0, source: bytes | None = None) -> Path:
    """An export beside ``weights``, ``age_seconds`` older than them, recording the digest of ``source`` if given."""
    export = openvino_export_of(str(weights))
    export.mkdir()
    (export / "model.xml").write_text("<net/>")
    if source is not None:
        (export / "metadata.yaml").write_text(f"task: detect\n{SOURCE_DIGEST}: {hashlib.sha256(source).hexdigest()}\n")
    stamp = weights.stat().st_mtime - age_seconds
    os.utime(export, (stamp, stamp))
    return export


@pytest.mark.parametrize(
    ("path", "backend"),
    [
        ("/m/yolo11n.pt", PYTORCH),
        ("/m/yolo11n.onnx", ONNX),
        ("/m/yolo11n_openvino_model", OPENVINO),
        ("/m/yolo11n_openvino_model/", OPENVINO),
        ("/m/yolo11n.engine", ULTRALYTICS),
    ],
)
def test_a_registry_path_names_its_runtime_by_its_form(path: str, backend: str) -> None:
    assert backend_of(path) == backend


def test_a_cpu_runs_the_openvino_export_beside_the_weights(weights: Path) -> None:
    export = make_export(weights)
    choice = choose(str(weights), "cpu")
    assert (choice.path, choice.backend, choice.fallback_reason) == (str(export), OPENVINO, None)


def test_without_an_export_the_weights_run_on_pytorch_and_say_why(weights: Path) -> None:
    choice = choose(str(weights), "cpu")
    assert (choice.path, choice.backend) == (str(weights), PYTORCH)
    assert choice.fallback_reason is not None and "no OpenVINO export" in choice.fallback_reason


def test_an_export_older_than_its_weights_is_not_used(weights: Path) -> None:
    """An export that records no digest (Ultralytics' own ``yolo export``) is judged by its age."""
    make_export(weights, age_seconds=60)
    choice = choose(str(weights), "cpu")
    assert choice.backend == PYTORCH
    assert choice.fallback_reason is not None and "older than the weights" in choice.fallback_reason


def test_an_export_made_from_the_weights_runs_whatever_its_file_times(weights: Path) -> None:
    """A checkout or a wheel writes its files in any order: the digest the export records decides."""
    export = make_export(weights, age_seconds=60, source=weights.read_bytes())
    assert choose(str(weights), "cpu") == Choice(str(export), OPENVINO)


def test_an_export_made_from_other_weights_is_not_used(weights: Path) -> None:
    make_export(weights, age_seconds=-60, source=b"the weights before they were trained again")
    choice = choose(str(weights), "cpu")
    assert choice.backend == PYTORCH
    assert choice.fallback_reason == (
        f"the OpenVINO export at {openvino_export_of(str(weights))} was made from other weights "
        f"(python -m inference.export {weights} makes it)"
    )


@pytest.mark.usefixtures("without_pytorch")
def test_without_pytorch_weights_with_no_export_are_refused_saying_what_to_install_or_export(weights: Path) -> None:
    choice = choose(str(weights), "cpu")
    with pytest.raises(NeedsPyTorch) as refused:
        load(choice, "cpu", 1)
    assert str(refused.value) == (
        f"{weights} runs through Ultralytics and PyTorch, which this worker lacks: {GPU_INSTALL}, or run them on "
        f"OpenVINO: no OpenVINO export at {openvino_export_of(str(weights))} "
        f"(python -m inference.export {weights} makes it)"
    )


def test_the_installs_the_messages_name_bring_their_runtimes() -> None:
    parser = configparser.ConfigParser()
    parser.read(PROJECT_ROOT / "setup.cfg")
    extra = re.fullmatch(r"pip install 'yolo-jobs\[(.+)\]'", GPU_INSTALL)
    assert extra is not None, GPU_INSTALL
    requirements = parser["options.extras_require"][extra[1]]
    assert "ultralytics" in requirements and "yolo-jobs[worker-cpu]" in requirements
    cpu = re.fullmatch(r"pip install 'yolo-jobs\[(.+)\]'", CPU_INSTALL)
    assert cpu is not None and "openvino" in parser["options.extras_require"][cpu[1]]


@pytest.mark.usefixtures("without_pytorch")
def test_without_pytorch_what_only_ultralytics_runs_is_refused_saying_what_to_install(tmp_path: Path) -> None:
    """A TensorRT engine, or any model on a GPU: no export helps, PyTorch must be installed."""
    engine = str(tmp_path / "m.engine")
    with pytest.raises(NeedsPyTorch, match=r"runs through Ultralytics and PyTorch, which this worker lacks") as refused:
        load(choose(engine, "cuda:0"), "cuda:0", 1)
    assert str(refused.value).endswith(GPU_INSTALL)


def test_a_gpu_runs_the_weights_themselves(weights: Path) -> None:
    make_export(weights)
    assert choose(str(weights), "cuda:0").backend == PYTORCH


def test_an_exported_model_named_in_the_registry_runs_as_named(tmp_path: Path) -> None:
    assert choose(str(tmp_path / "m.onnx"), "cpu").backend == ONNX

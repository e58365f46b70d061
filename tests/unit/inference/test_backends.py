"""Which runtime a registry entry runs on, and the fallback to the .pt weights when its export is unusable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference.backends import ONNX, OPENVINO, PYTORCH, ULTRALYTICS, backend_of, choose, openvino_export_of


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights")
    return path


def make_export(weights: Path, age_seconds: float = 0) -> Path:
    export = openvino_export_of(str(weights))
    export.mkdir()
    (export / "model.xml").write_text("<net/>")
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
    make_export(weights, age_seconds=60)
    choice = choose(str(weights), "cpu")
    assert choice.backend == PYTORCH
    assert choice.fallback_reason is not None and "older than the weights" in choice.fallback_reason


def test_a_gpu_runs_the_weights_themselves(weights: Path) -> None:
    make_export(weights)
    assert choose(str(weights), "cuda:0").backend == PYTORCH


def test_an_exported_model_named_in_the_registry_runs_as_named(tmp_path: Path) -> None:
    assert choose(str(tmp_path / "m.onnx"), "cpu").backend == ONNX

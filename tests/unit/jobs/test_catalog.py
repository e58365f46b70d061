"""The model catalog's view of weights on disk: which exist (an OpenVINO export once it holds its model) and their
digest. What workers report, and the size a job runs at, are test_registry.py's."""

from __future__ import annotations

import hashlib
from pathlib import Path

from jobs.catalog import weights_present, weights_sha256


def test_weights_present_and_their_digest(tmp_path: Path) -> None:
    weights = tmp_path / "model.pt"
    assert not weights_present(str(weights)) and weights_sha256(str(weights)) is None
    weights.write_bytes(b"weights")
    assert weights_present(str(weights))
    assert weights_sha256(str(weights)) == hashlib.sha256(b"weights").hexdigest()
    assert weights_present("yolo11n.yaml"), "a model YAML is built from its name"


def test_an_openvino_export_folder_is_present_once_it_holds_its_model(tmp_path: Path) -> None:
    export = tmp_path / "model_openvino_model"
    export.mkdir()
    assert not weights_present(str(export)), "an empty folder is not an export"
    (export / "model.xml").write_text("<net/>")
    assert weights_present(str(export))
    assert not weights_present(str(tmp_path / "missing.onnx"))

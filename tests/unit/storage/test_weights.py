"""What passes as weights sent by a resumable upload: PyTorch's archive and an ONNX model, told by their bytes, each
under the suffix that names it; anything else is refused as media are, and the stream is left at its start."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from storage.images import UnsupportedMedia
from storage.media import WeightsInfo
from storage.weights import identify_weights


@pytest.fixture(scope="module")
def pytorch(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Weights as torch.save writes them."""
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    torch.save({"model": torch.zeros(4)}, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def onnx_model() -> bytes:
    """A real, if tiny, ONNX model: one Identity node."""
    tensor = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [tensor], [output])
    model = helper.make_model(graph, producer_name="yolo-jobs tests")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def zip_of(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, b"content")
    return buffer.getvalue()


def test_pytorch_and_onnx_weights_pass_by_their_bytes(pytorch: bytes, onnx_model: bytes, tmp_path: Path) -> None:
    for name, data in (("yolo11n.pt", pytorch), ("Model.ONNX", onnx_model)):
        stream = io.BytesIO(data)
        stream.seek(7)
        assert identify_weights(stream, name) == WeightsInfo(), name
        assert stream.tell() == 0
    assert (WeightsInfo().content_type, WeightsInfo().width, WeightsInfo().height) == (
        "application/octet-stream",
        None,
        None,
    )


def test_other_bytes_are_refused_saying_what_weights_are(pytorch: bytes, onnx_model: bytes) -> None:
    not_pytorch, not_onnx = "not PyTorch weights", "not an ONNX model"
    cases = {
        ("model.pt", onnx_model): not_pytorch,
        ("model.pt", zip_of("notes.txt")): not_pytorch,  # a zip torch.save did not write
        ("model.pt", b"just text"): not_pytorch,
        ("model.pt", b""): not_pytorch,
        ("model.onnx", pytorch): not_onnx,
        ("model.onnx", onnx_model[:-1]): not_onnx,  # cut short: its last field runs past the end
        ("model.onnx", onnx_model + b"\x00"): not_onnx,  # a field numbered 0
        ("model.onnx", b"just some text\n" * 100): not_onnx,
        ("model.onnx", b"\x08\x08"): not_onnx,  # an IR version and no graph
        ("model.engine", pytorch): "sent as a .pt or .onnx file",
        ("model", onnx_model): "sent as a .pt or .onnx file",
    }
    for (name, data), clause in cases.items():
        stream = io.BytesIO(data)
        with pytest.raises(UnsupportedMedia, match=clause):
            identify_weights(stream, name)
        assert stream.tell() == 0, name

"""Export ``.pt`` weights for a direct backend: ``python -m inference.export [WEIGHTS] [--format openvino|onnx]``.

``make model`` runs it on the bundled model for OpenVINO, the fastest CPU backend
measured (``bench/backends.py``), and the export is kept in the repository beside the
``.pt``: a CPU worker runs it instead of the ``.pt`` (``inference.backends.choose``),
with no PyTorch installed. An OpenVINO export's ``metadata.yaml`` records the SHA-256 of
the weights it was made from, so a worker (and ``tests/unit/inference/test_bundled_export.py``)
tells an export of other weights by its content, not by file times. The export has a dynamic
input (any batch, any size), so jobs keep their own ``imgsz`` and several images run in one
call. It is written beside a copy of the weights in a temporary folder and moved into place
whole, so a worker starting meanwhile never loads half of one. Exporting needs PyTorch and
Ultralytics (the ``worker-gpu`` extra).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import warnings
from pathlib import Path

from config import Settings
from config.paths import BUNDLED_MODEL
from config.ultralytics import configure_ultralytics
from inference.backends import (
    GPU_INSTALL,
    ONNX,
    OPENVINO,
    PYTORCH,
    SOURCE_DIGEST,
    installed,
    openvino_export_of,
    sha256_of,
)
from inference.defaults import DEFAULT_INFERENCE_SIZE

FORMATS = {OPENVINO: "openvino", ONNX: "onnx"}


def export_path(weights: Path, backend: str) -> Path:
    """Where the export of ``weights`` for ``backend`` lives: beside them, named as Ultralytics names it."""
    return openvino_export_of(str(weights)) if backend == OPENVINO else weights.with_suffix(".onnx")


def export(weights: Path, backend: str = OPENVINO, destination: Path | None = None) -> Path:
    """Export ``weights`` for ``backend`` at their own inference size; return where the export is."""
    configure_ultralytics(Settings.from_env().worker)
    from ultralytics import YOLO

    destination = destination or export_path(weights, backend)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".export-") as tmp:
        copy = Path(tmp) / weights.name
        shutil.copyfile(weights, copy)
        model = YOLO(str(copy))
        size = model.overrides.get("imgsz", DEFAULT_INFERENCE_SIZE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.trace's deprecation, which Ultralytics' exporter calls
            made = Path(model.export(format=FORMATS[backend], imgsz=size, dynamic=True))
        if backend == OPENVINO:  # Ultralytics' reader of metadata.yaml keeps a key it does not know, unused
            with open(made / "metadata.yaml", "a") as metadata:
                metadata.write(f"{SOURCE_DIGEST}: {sha256_of(weights)}\n")
        if destination.is_dir():
            shutil.rmtree(destination)
        made.replace(destination)
    return destination


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="?", type=Path, default=BUNDLED_MODEL, help="default: the bundled model")
    parser.add_argument("--format", choices=sorted(FORMATS), default=OPENVINO)
    parser.add_argument("--output", type=Path, help="default: beside the weights, named as Ultralytics names it")
    arguments = parser.parse_args()
    if not installed(PYTORCH):
        parser.error(f"exporting needs PyTorch and Ultralytics, not installed here: {GPU_INSTALL}")
    print(export(arguments.weights, arguments.format, arguments.output))


if __name__ == "__main__":
    main()

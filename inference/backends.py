"""The runtimes a model can run on, each behind :class:`Detector`, and which one a model gets.

- ``.pt`` weights (and formats we do not call directly, such as TensorRT ``.engine``)
  run through Ultralytics' ``YOLO.predict``;
- an OpenVINO directory (``*_openvino_model/``) and an ``.onnx`` file run on
  OpenVINO and ONNX Runtime directly: through Ultralytics' wrapper they ran at half
  the speed (OpenVINO) or less (ONNX Runtime's threads fighting torch's), see
  ``bench/backends.py``. Pre- and post-processing are Ultralytics' own, in numpy
  (``inference/yolo.py``), so detections agree with PyTorch's.

Every detector answers ``predict(images, options)`` with one list per image of
Ultralytics' ``summary()`` rows: ``{"name", "class", "confidence", "box": {"x1",
"y1", "x2", "y2"}}`` in that image's pixels, unrounded.

On a CPU, a ``.pt`` model runs on its OpenVINO export when one sits next to it
(``<stem>_openvino_model/``, made by ``python -m inference.export``), was made from
these very weights, and OpenVINO is installed; otherwise on PyTorch, and :func:`choose`
says why. "These very weights": the export's ``metadata.yaml`` records the digest of the
``.pt`` it was made from (:data:`SOURCE_DIGEST`), since a checkout's or a wheel's file
times say nothing of which came first; an export that records none (Ultralytics' own
``yolo export``) must be at least as new as the weights.

A CPU worker installed without PyTorch and Ultralytics (the ``worker-cpu`` extra) runs
the direct backends alone: :func:`load` refuses anything else with :class:`NeedsPyTorch`,
whose message says in one line what to install or export.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inference.defaults import DEFAULT_INFERENCE_SIZE
from inference.yolo import Detection, detections, inference_shape, letterbox

log = logging.getLogger(__name__)

PYTORCH, OPENVINO, ONNX, ULTRALYTICS = "pytorch", "openvino", "onnxruntime", "ultralytics"
# The precision every backend computes in here: OpenVINO is pinned to f32, and no backend is asked for half.
FP32 = "fp32"
# The export `make model` builds and a CPU worker prefers: the fastest CPU backend measured (bench/backends.py).
PREFERRED_EXPORT = OPENVINO
# The modules each runtime imports. A worker-cpu install has OpenVINO's and ONNX Runtime's; PyTorch's and
# Ultralytics' come with worker-gpu, which what runs through Ultralytics needs (UltralyticsDetector).
RUNTIME_MODULES = {
    OPENVINO: ("openvino",),
    ONNX: ("onnxruntime",),
    PYTORCH: ("torch", "ultralytics"),
    ULTRALYTICS: ("torch", "ultralytics"),
}
# The key of an OpenVINO export's metadata.yaml that holds the SHA-256 of the .pt it was made from (inference.export).
SOURCE_DIGEST = "source_sha256"
# What a worker installs to run exports (CPU_INSTALL), and what needs PyTorch (GPU_INSTALL).
CPU_INSTALL = "pip install 'yolo-jobs[worker-cpu]'"
GPU_INSTALL = "pip install 'yolo-jobs[worker-gpu]'"


class PredictOptions(Protocol):
    """What a prediction is asked for (``jobs.lifecycle.JobParams`` is one)."""

    conf: float
    iou: float
    imgsz: int | None


class Detector(Protocol):
    """A loaded model on one runtime: what it computes in, and its weights' digest once the pool knows it (results
    of the same digest, backend and precision are interchangeable: ``jobs.reuse``)."""

    backend: str
    precision: str
    weights_sha256: str | None
    task: str
    names: dict[int, str]
    stride: int  # the model's largest stride: inference sizes are rounded up to a multiple of it
    imgsz: int  # the longest side images are resized to when a job names no size
    fixed_imgsz: int | None  # an export made at one size runs at it, whatever a job asks; None: at the size asked

    def predict(self, images: Sequence[np.ndarray], options: PredictOptions) -> list[list[Detection]]:
        """Detections for each BGR image, in its own pixels."""
        ...


@dataclass(frozen=True)
class Choice:
    """Which weights a model runs from, on which runtime, and why not on the preferred one."""

    path: str
    backend: str
    fallback_reason: str | None = None


def openvino_export_of(weights: str) -> Path:
    """Where Ultralytics (and ``make model``) put the OpenVINO export of ``.pt`` weights."""
    path = Path(weights)
    return path.with_name(f"{path.stem}_openvino_model")


def backend_of(path: str) -> str:
    """The runtime a registry path names, by its form."""
    if path.endswith(".onnx"):
        return ONNX
    if path.rstrip("/").endswith("_openvino_model") or path.endswith(".xml"):
        return OPENVINO
    return PYTORCH if path.endswith(".pt") else ULTRALYTICS


class NeedsPyTorch(RuntimeError):
    """A model that runs through Ultralytics, on a worker installed without PyTorch (``worker-cpu``)."""


def installed(backend: str) -> bool:
    """Whether the modules ``backend`` runs on can be imported here (found, not imported: torch takes seconds)."""
    return all(importlib.util.find_spec(module) is not None for module in RUNTIME_MODULES[backend])


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file (``inference`` imports nothing of ``storage``, whose ``file_sha256`` is the same)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def export_source(export: Path) -> str | None:
    """The digest of the weights an OpenVINO export was made from, as ``inference.export`` recorded it; None
    for an export that records none."""
    import yaml

    metadata = export / "metadata.yaml"
    recorded = yaml.safe_load(metadata.read_text()).get(SOURCE_DIGEST) if metadata.is_file() else None
    return str(recorded) if recorded else None


def stale_export(export: Path, weights: Path) -> str | None:
    """Why ``export`` is not the export of ``weights`` (made from other weights, or older than them); None when it
    is."""
    source = export_source(export)
    if source is not None:
        return None if source == sha256_of(weights) else f"the OpenVINO export at {export} was made from other weights"
    if export.stat().st_mtime < weights.stat().st_mtime:
        return f"the OpenVINO export at {export} is older than the weights"
    return None


def choose(weights: str, device: str) -> Choice:
    """The weights and runtime a registry entry runs on here (see the module docstring)."""
    backend = backend_of(weights)
    if backend != PYTORCH or device != "cpu":
        return Choice(weights, backend)
    export = openvino_export_of(weights)
    rebuild = f"python -m inference.export {weights} makes it"
    if not any(export.glob("*.xml")):
        reason = f"no OpenVINO export at {export} ({rebuild})"
    elif not installed(PREFERRED_EXPORT):
        reason = f"openvino is not installed ({CPU_INSTALL})"
    elif stale := stale_export(export, Path(weights)):
        reason = f"{stale} ({rebuild})"
    else:
        return Choice(str(export), PREFERRED_EXPORT)
    return Choice(weights, PYTORCH, reason)


def pytorch_missing(choice: Choice) -> str:
    """In one line: why ``choice`` cannot run here, and what to install, or (where :func:`choose` said why it did
    not run an export) what to export."""
    needs = f"{choice.path} runs through Ultralytics and PyTorch, which this worker lacks: {GPU_INSTALL}"
    if choice.fallback_reason:
        return f"{needs}, or run them on OpenVINO: {choice.fallback_reason}"
    return needs


def longest_side(size: int | Sequence[int]) -> int:
    """A model's input size as its longest side: Ultralytics' metadata says ``[height, width]`` or one number."""
    return max(size) if isinstance(size, list | tuple) else int(size)


def load(choice: Choice, device: str, threads: int) -> Detector:
    """Load ``choice`` for ``device``, running inference on ``threads`` threads when on the CPU."""
    if device == "cpu" and choice.backend in (OPENVINO, ONNX):
        opener = _open_openvino if choice.backend == OPENVINO else _open_onnx
        metadata, run = opener(Path(choice.path), threads)
        if metadata.get("task", "detect") == "detect":
            return DirectDetector(choice.backend, metadata, run)
    if not installed(PYTORCH):
        raise NeedsPyTorch(pytorch_missing(choice))
    return UltralyticsDetector(choice.path, device, threads)


class UltralyticsDetector:
    """Any model Ultralytics loads, through ``YOLO.predict`` (PyTorch, TensorRT, and non-detect tasks)."""

    def __init__(self, weights: str, device: str, threads: int) -> None:
        import torch
        from ultralytics import YOLO

        torch.set_num_threads(threads)  # Ultralytics' import sets OMP_NUM_THREADS=1
        self.model = YOLO(weights)
        self.device = device
        self.backend = PYTORCH if weights.endswith(".pt") else ULTRALYTICS
        self.precision = FP32
        self.weights_sha256: str | None = None
        self.task = self.model.task
        self.fixed_imgsz: int | None = None
        if weights.endswith(".pt"):
            self.model.to(device)
            strides = getattr(self.model.model, "stride", None)
            self.stride = int(strides.max()) if strides is not None else 32  # Ultralytics' own fallback
            size = self.model.overrides.get("imgsz")
        else:
            # An export: Ultralytics reads its metadata (stride, size, whether its input is dynamic) as it first
            # predicts. One blank image does that now, and warms the runtime up for the first job.
            self.model.predict(np.zeros((32, 32, 3), np.uint8), device=device, verbose=False)
            runtime = self.model.predictor.model
            self.stride = int(getattr(runtime, "stride", 32))
            size = getattr(runtime, "imgsz", None)
            if size and not getattr(runtime, "dynamic", False):  # Ultralytics runs it at its own size then
                self.fixed_imgsz = longest_side(size)
        self.names = {int(index): str(label) for index, label in self.model.names.items()}
        self.imgsz = longest_side(size or DEFAULT_INFERENCE_SIZE)

    def predict(self, images: Sequence[np.ndarray], options: PredictOptions) -> list[list[Detection]]:
        if not images:
            return []
        arguments: dict[str, Any] = {"conf": options.conf, "iou": options.iou, "device": self.device, "verbose": False}
        if options.imgsz:
            arguments["imgsz"] = options.imgsz
        return [result.summary(decimals=6) for result in self.model.predict(list(images), **arguments)]


class DirectDetector:
    """A detection model on OpenVINO or ONNX Runtime, called directly, with Ultralytics' steps around it."""

    def __init__(self, backend: str, metadata: dict[str, Any], run: Callable[[np.ndarray], np.ndarray]) -> None:
        self.backend = backend
        self.precision = FP32
        self.weights_sha256: str | None = None
        self.task = "detect"
        self.names = {int(index): str(label) for index, label in metadata["names"].items()}
        self.stride = int(metadata.get("stride", 32))
        self.imgsz = longest_side(metadata.get("imgsz") or DEFAULT_INFERENCE_SIZE)
        # A static export runs at its own size, one image at a time (as Ultralytics runs it).
        self.static = not metadata.get("args", {}).get("dynamic", False)
        self.fixed_imgsz = self.imgsz if self.static else None
        self._run = run

    def predict(self, images: Sequence[np.ndarray], options: PredictOptions) -> list[list[Detection]]:
        if not images:
            return []
        if self.static:
            size = self.imgsz
            groups = [[position] for position in range(len(images))]
        else:
            # One call per image shape: each image is letterboxed to the rectangle it gets alone, so its
            # boxes do not depend on the other images of the call (another job's, in a round).
            size = inference_shape(options.imgsz or self.imgsz, self.stride)
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for position, image in enumerate(images):
                by_shape.setdefault(image.shape, []).append(position)
            groups = list(by_shape.values())
        found: dict[int, list[Detection]] = {}
        for group in groups:
            boxed = letterbox([images[p] for p in group], size, self.stride, rect=not self.static)
            outputs = self._run(boxed.batch)
            input_shape = boxed.batch.shape[2:]
            for position, output, shape in zip(group, outputs, boxed.shapes, strict=True):
                found[position] = detections(output, input_shape, shape, self.names, options.conf, options.iou)
        return [found[position] for position in range(len(images))]


Runner = Callable[[np.ndarray], np.ndarray]


def _open_openvino(path: Path, threads: int) -> tuple[dict[str, Any], Runner]:
    """Ultralytics' metadata of an OpenVINO export, and a function running a batch through it."""
    import openvino
    import yaml

    xml = path if path.is_file() else next(path.glob("*.xml"))
    metadata = yaml.safe_load((xml.parent / "metadata.yaml").read_text())
    core = openvino.Core()
    # f32 pinned: on a CPU with bf16 instructions OpenVINO would compute in bf16 by default (1.6 times as fast
    # on this project's AMD EPYC), and a job's boxes would then depend on the node it ran on and drift from PyTorch's.
    # No CPU pinning: OpenVINO pins its threads to cores counted from the first, not knowing the other worker
    # processes, so two processes of one thread each shared one core (34 images/s on 2 cores; 74 unpinned).
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": False,
    }
    compiled = core.compile_model(core.read_model(xml), "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def run(batch: np.ndarray) -> np.ndarray:
        return request.infer({0: batch})[output]

    return metadata, run


def _open_onnx(path: Path, threads: int) -> tuple[dict[str, Any], Runner]:
    """Ultralytics' metadata of an ONNX export, and a function running a batch through ONNX Runtime."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    literals = ("names", "imgsz", "args", "stride")
    props = session.get_modelmeta().custom_metadata_map
    metadata = {key: ast.literal_eval(value) if key in literals else value for key, value in props.items()}
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: batch})[0]

    return metadata, run

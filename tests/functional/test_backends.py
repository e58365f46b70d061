"""Every backend finds what PyTorch finds on the model quality test's images, batched as the worker batches.

Same class, IoU ≥ 0.9, every box edge within 2 px and the confidence within 0.01 of
PyTorch predicting each image alone (letterboxed to its own minimum rectangle), at batch 1
and at batch 8 of mixed shapes: a direct backend letterboxes each image as if alone, so an
image's boxes do not depend on the others of its call (another job's, in a round), where
Ultralytics would letterbox a mixed batch square. The OpenVINO export is the one kept in the
repository beside the ``.pt``, which CPU workers run: this fails when it no longer matches the
weights' predictions (``make model`` rebuilds it). The ONNX one is made from the shipped weights in a
subprocess (``python -m inference.export``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from celery.utils.sysinfo import cpu_budget

from config.paths import BUNDLED_MODEL, PROJECT_ROOT
from evaluation.scenes import render
from harness.side_by_side import side_by_side
from inference.backends import ONNX, OPENVINO, PYTORCH, Choice, Detector, choose, load, openvino_export_of
from inference.yolo import Detection
from tests.functional.test_model_quality import EVAL_SEED

pytestmark = pytest.mark.slow
OPTIONS = SimpleNamespace(conf=0.25, iou=0.7, imgsz=None)
AGREEMENT_IMAGES = 40  # the first of the quality test's independent evaluation images
MAX_PIXELS = 2.0
MAX_CONFIDENCE = 0.01
MIN_IOU = 0.9


def exported(backend: str, destination: Path) -> Path:
    command = [sys.executable, "-m", "inference.export", str(BUNDLED_MODEL), "--format", backend]
    result = subprocess.run(
        [*command, "--output", str(destination)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return destination


@pytest.fixture(scope="module")
def detectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Detector]:
    folder = tmp_path_factory.mktemp("exports")
    committed = openvino_export_of(str(BUNDLED_MODEL))
    assert choose(str(BUNDLED_MODEL), "cpu") == Choice(str(committed), OPENVINO), "what CPU workers run"
    threads = cpu_budget().count
    return {
        PYTORCH: load(Choice(str(BUNDLED_MODEL), PYTORCH), "cpu", threads),
        OPENVINO: load(Choice(str(committed), OPENVINO), "cpu", threads),
        ONNX: load(Choice(str(exported(ONNX, folder / "m.onnx")), ONNX), "cpu", threads),
    }


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [decoded(render(EVAL_SEED, index)[0]) for index in range(AGREEMENT_IMAGES)]


def decoded(jpeg: bytes) -> np.ndarray:
    """A JPEG as the worker decodes it: BGR pixels."""
    import cv2

    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def predicted(detector: Detector, images: list[np.ndarray], batch: int) -> list[list[Detection]]:
    found = []
    for start in range(0, len(images), batch):
        found += detector.predict(images[start : start + batch], OPTIONS)
    return found


def iou(a: dict[str, float], b: dict[str, float]) -> float:
    width = max(0.0, min(a["x2"], b["x2"]) - max(a["x1"], b["x1"]))
    height = max(0.0, min(a["y2"], b["y2"]) - max(a["y1"], b["y1"]))
    area = (a["x2"] - a["x1"]) * (a["y2"] - a["y1"]) + (b["x2"] - b["x1"]) * (b["y2"] - b["y1"])
    return width * height / (area - width * height)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("backend", [OPENVINO, ONNX])
def test_backend_agrees_with_pytorch(
    detectors: dict[str, Detector], images: list[np.ndarray], backend: str, batch: int
) -> None:
    expected = predicted(detectors[PYTORCH], images, 1)
    found = predicted(detectors[backend], images, batch)
    assert detectors[backend].backend == backend
    assert sum(map(len, expected)) >= 100, "the images hold enough objects to compare"
    worst_pixels = worst_confidence = 0.0
    for index, (reference, candidates) in enumerate(zip(expected, found, strict=True)):
        assert len(candidates) == len(reference), f"image {index}: {len(candidates)} boxes, PyTorch {len(reference)}"
        for want in reference:
            same_class = [c for c in candidates if c["class"] == want["class"] and c["name"] == want["name"]]
            assert same_class, f"image {index}: no {want['name']} where PyTorch found one"
            got = max(same_class, key=lambda c: iou(c["box"], want["box"]))
            assert iou(got["box"], want["box"]) >= MIN_IOU, f"image {index}: {got} against {want}"
            worst_pixels = max(worst_pixels, *(abs(got["box"][k] - want["box"][k]) for k in want["box"]))
            worst_confidence = max(worst_confidence, abs(got["confidence"] - want["confidence"]))
    print(f"\n{backend} batch {batch}: at most {worst_pixels:.4f} px and {worst_confidence:.5f} confidence apart")
    assert worst_pixels <= MAX_PIXELS and worst_confidence <= MAX_CONFIDENCE


def _predict_alone(path: str) -> Callable[[], float]:
    """One worker process of one inference thread, loaded; its work returns the share of a core it got."""
    detector = load(Choice(path, OPENVINO), "cpu", 1)
    batch = [np.zeros((320, 320, 3), np.uint8)] * 8
    detector.predict(batch, OPTIONS)

    def work() -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(6):
            detector.predict(batch, OPTIONS)
        return (time.process_time() - cpu) / (time.perf_counter() - wall)

    return work


@pytest.mark.skipif(cpu_budget().count < 2, reason="needs two cores: it checks that two processes use both")
@pytest.mark.alone  # two processes each get a whole core only on a machine doing nothing else
def test_two_single_thread_openvino_processes_use_a_core_each() -> None:
    """OpenVINO pins its threads to cores counted from the first: unpinned, two worker processes of one thread
    each run side by side (pinned, they shared one core: half a core each)."""
    bundled = choose(str(BUNDLED_MODEL), "cpu")
    assert bundled.backend == OPENVINO, "the OpenVINO export is kept beside the weights"
    shares = side_by_side(_predict_alone, [(bundled.path,)] * 2, timeout=120)
    assert min(shares) > 0.7, shares

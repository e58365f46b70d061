"""The backend table: images/s of each runtime on the bundled model, against the bare Ultralytics loop.

Every row decodes the same shapes JPEGs and predicts them, in this process: the
baseline is a plain ``YOLO(pt).predict`` over batches of 8 with Ultralytics' own
thread choice (measured first and last; the drift is reported); then PyTorch at 1
and 2 threads through our detector, each exported backend through Ultralytics'
wrapper and called directly (``inference.backends``) at batch 1 and 8, on the
cores the process may use. Each row is the best of ``repeats`` passes, since other
work on the machine only ever slows a pass down.

``python -m bench.backends [--images N] [--repeats N]`` runs it alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

from celery.utils.sysinfo import cpu_budget

from bench.pipeline import bare_predict_loop
from config import Settings
from config.paths import BUNDLED_MODEL
from config.ultralytics import configure_ultralytics
from inference.backends import ONNX, OPENVINO, PYTORCH, Choice, load
from inference.export import export
from training.shapes import render_sample

IMAGES = 400
REPEATS = 3
SEED = 5
OPTIONS = SimpleNamespace(conf=0.25, iou=0.7, imgsz=None)


def shapes_jpegs(count: int) -> list[bytes]:
    import cv2
    import numpy as np

    images = []
    for index in range(count):
        pixels = cv2.cvtColor(np.asarray(render_sample(SEED, index)[0]), cv2.COLOR_RGB2BGR)
        images.append(cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return images


def best_rate(predict: Callable[[list], object], jpegs: Sequence[bytes], batch: int, repeats: int) -> float:
    """Images/s of decoding and predicting ``jpegs`` in batches of ``batch``: the best of ``repeats`` passes."""
    import cv2
    import numpy as np

    def decoded(chunk: Sequence[bytes]) -> list:
        return [cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) for data in chunk]

    predict(decoded(jpegs[:batch]))  # warm-up: first-call allocations and shape compilation
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(jpegs), batch):
            predict(decoded(jpegs[start : start + batch]))
        rates.append(len(jpegs) / (time.perf_counter() - started))
    return max(rates)


def run(images: int = IMAGES, repeats: int = REPEATS) -> dict[str, float]:
    configure_ultralytics(Settings.from_env().worker)
    import torch
    from ultralytics import YOLO

    jpegs = shapes_jpegs(images)
    cores = cpu_budget().count
    ultralytics_threads = torch.get_num_threads()
    figures: dict[str, float] = {}
    baseline_before = max(bare_predict_loop(jpegs) for _ in range(repeats))
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="yolo-bench-exports-") as tmp:
        exports = {
            OPENVINO: export(BUNDLED_MODEL, OPENVINO, Path(tmp) / "shapes_openvino_model"),
            ONNX: export(BUNDLED_MODEL, ONNX, Path(tmp) / "shapes.onnx"),
        }
        for backend, path in exports.items():
            wrapped = YOLO(str(path), task="detect")
            for batch in (1, 8):
                predict = lambda images, wrapped=wrapped: wrapped.predict(images, device="cpu", verbose=False)  # noqa: E731
                rows[f"{backend} via Ultralytics, batch {batch}"] = best_rate(predict, jpegs, batch, repeats)
        for threads in (1, 2):
            detector = load(Choice(str(BUNDLED_MODEL), PYTORCH), "cpu", threads)
            rows[f"pytorch, threads={threads}, batch 8"] = best_rate(
                lambda images, detector=detector: detector.predict(images, OPTIONS), jpegs, 8, repeats
            )
        torch.set_num_threads(ultralytics_threads)
        for backend, path in exports.items():
            detector = load(Choice(str(path), backend), "cpu", cores)
            for batch in (1, 8):
                rows[f"{backend} direct, threads={cores}, batch {batch}"] = best_rate(
                    lambda images, detector=detector: detector.predict(images, OPTIONS), jpegs, batch, repeats
                )
    baseline_after = max(bare_predict_loop(jpegs) for _ in range(repeats))
    baseline = (baseline_before + baseline_after) / 2
    figures["bare Ultralytics loop images/s, before"] = baseline_before
    figures["bare Ultralytics loop images/s, after"] = baseline_after
    figures["baseline drift (after / before)"] = baseline_after / baseline_before
    for label, rate in rows.items():
        figures[f"{label} images/s"] = rate
        figures[f"{label} / baseline"] = rate / baseline
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="the backend table")
    parser.add_argument("--images", type=int, default=IMAGES)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    arguments = parser.parse_args()
    from bench import report

    command = f"python -m bench.backends --images {arguments.images} --repeats {arguments.repeats}"
    measured = report.measure("bench.backends", command, lambda: run(arguments.images, arguments.repeats))
    report.append(measured)
    print(f"appended to {report.RESULTS_FILE}")
    for label, value in measured.figures.items():
        print(f"  {label:<60} {value:>10.3f}")


if __name__ == "__main__":
    main()

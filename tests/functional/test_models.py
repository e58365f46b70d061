"""The model registry: listing models, choosing one per job, the backend each runs on, and missing weights
failing jobs cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from config.paths import BUNDLED_MODEL
from harness.images import image_bytes
from harness.processes import ServiceProcess, start_worker, wait_until
from inference.backends import choose
from storage import Storage
from tests.conftest import MakeApp
from tests.helpers import TestKey, finished_job, submit

SHAPE_CLASSES = {"0": "circle", "1": "square", "2": "triangle"}


def default_model(api_url: str, key: TestKey) -> dict[str, Any]:
    models = requests.get(f"{api_url}/api/v1/models", headers=key.headers, timeout=5).json()["models"]
    return next(m for m in models if m["name"] == "shapes")


def test_models_lists_the_bundled_model_with_its_classes(
    api_url: str, worker: ServiceProcess, admin_key: TestKey, api_key: TestKey
) -> None:
    default = wait_until(
        lambda: (model := default_model(api_url, admin_key))["classes"] and model,
        60,
        what="the worker to report the default model",
    )
    assert default["default"] is True and default["weights_present"] is True and default["aliases"] == ["default"]
    assert default["stride"] == 32 and default["imgsz"] % 32 == 0, "what the API rounds a job's imgsz with"
    assert default["weights"] == str(BUNDLED_MODEL), "an admin sees where the weights are"
    assert default["classes"] == SHAPE_CLASSES and default["task"] == "detect"
    bundled = choose(str(BUNDLED_MODEL), "cpu")  # OpenVINO once make built the export
    assert f"backend={bundled.backend} from={bundled.path} device=cpu" in worker.log_text()
    assert len(default["weights_sha256"]) == 64
    seen = default_model(api_url, api_key)
    assert seen["weights"] is None, "other keys see no server paths"
    assert (seen["weights_present"], seen["classes"]) == (True, SHAPE_CLASSES)


def test_missing_weights_fail_jobs_with_model_unavailable(
    make_app: MakeApp, isolated_env: dict[str, str], storage: Storage, logs_dir: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "plain.pt"  # no export beside it: PyTorch, and the log says why
    plain.write_bytes(BUNDLED_MODEL.read_bytes())
    models = f"default={BUNDLED_MODEL},coco=/nonexistent/models/yolo11n.pt,plain={plain}"
    env = {**isolated_env, "YOLO_MODELS": models}
    app = make_app(env)
    listing = {m["name"]: m for m in app.test_client().get("/api/v1/models").get_json()["models"]}
    assert listing["coco"]["weights_present"] is False and listing["coco"]["classes"] is None
    assert listing["shapes"]["weights_present"] is True, "YOLO_MODELS' old name 'default' is the shapes model"

    worker = start_worker(env, logs_dir / "worker-missing-weights.log", queues="inference", concurrency=1)
    try:
        coco_job = submit(app, [image_bytes(seed=611)], model="coco")
        missing = wait_until(lambda: finished_job(storage, coco_job), 60, what="coco job")
        assert missing.status == "failed" and missing.error_code == "model_unavailable"
        assert missing.error_message is not None and "/nonexistent/models/yolo11n.pt" in missing.error_message
        default_job = submit(app, [image_bytes(seed=612)], model="default")
        ok = wait_until(lambda: finished_job(storage, default_job), 60, what="default job")
        assert ok.status == "succeeded", "the worker must keep serving the other models"
        assert ok.model == "shapes", "an old client's 'default' runs, and is recorded as, the shapes model"
        plain_job = submit(app, [image_bytes(seed=613)], model="plain")
        assert wait_until(lambda: finished_job(storage, plain_job), 60, what="plain job").status == "succeeded"
        assert worker.running()
        assert worker.log_text().count("model loaded") == 2
        assert f"model name=plain runs on PyTorch from {plain}: no OpenVINO export" in worker.log_text()
    finally:
        worker.stop()

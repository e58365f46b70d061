"""The model registry: listing models, choosing one per job, and missing weights failing jobs cleanly."""

from __future__ import annotations

import io
import uuid

import requests

from app import create_app
from storage.jobs import get_job
from storage.settings import BUNDLED_MODEL
from tests.support import image_bytes, start_worker, wait_until

SHAPE_CLASSES = {"0": "circle", "1": "square", "2": "triangle"}


def test_models_lists_the_bundled_model_with_its_classes(api_url: str, worker) -> None:  # type: ignore[no-untyped-def]
    def listed() -> dict | None:
        models = requests.get(f"{api_url}/api/v1/models", timeout=5).json()["models"]
        default = next(m for m in models if m["name"] == "default")
        return default if default["classes"] else None

    default = wait_until(listed, 60, what="the worker to report the default model")
    assert default["default"] is True and default["weights_present"] is True
    assert default["weights"] == str(BUNDLED_MODEL)
    assert default["classes"] == SHAPE_CLASSES and default["task"] == "detect"
    assert len(default["weights_sha256"]) == 64


def test_missing_weights_fail_jobs_with_model_unavailable(isolated_env, storage, logs_dir) -> None:  # type: ignore[no-untyped-def]
    env = {**isolated_env, "YOLO_MODELS": f"default={BUNDLED_MODEL},coco=/nonexistent/models/yolo11n.pt"}
    app = create_app({**env, "TESTING": True})
    client = app.test_client()
    listing = {m["name"]: m for m in client.get("/api/v1/models").get_json()["models"]}
    assert listing["coco"]["weights_present"] is False and listing["coco"]["classes"] is None
    assert listing["default"]["weights_present"] is True

    def submit(model: str) -> uuid.UUID:
        data = {"model": model, "image": [(io.BytesIO(image_bytes(seed=hash(model) % 1000)), "a.png")]}
        response = client.post("/api/v1/jobs", data=data, content_type="multipart/form-data")
        assert response.status_code == 202, response.get_data(as_text=True)
        return uuid.UUID(response.get_json()["job_id"])

    def finished(job_id: uuid.UUID):  # type: ignore[no-untyped-def]
        with storage.session() as session:
            job = get_job(session, job_id)
        return job if job.is_finished else None

    worker = start_worker(env, logs_dir / "worker-missing-weights.log", queues="inference", concurrency=1)
    try:
        coco_job = submit("coco")
        missing = wait_until(lambda: finished(coco_job), 60, what="coco job")
        assert missing.status == "failed" and missing.error_code == "model_unavailable"
        assert "/nonexistent/models/yolo11n.pt" in missing.error_message
        default_job = submit("default")
        ok = wait_until(lambda: finished(default_job), 60, what="default job")
        assert ok.status == "succeeded", "the worker must keep serving the other models"
        assert worker.process.poll() is None
        assert worker.log_text().count("model loaded") == 1
    finally:
        worker.stop()
        app.extensions["yolo_storage"].dispose()

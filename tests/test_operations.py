"""The operator's view of a running stack: metrics, JSON logs, the Celery CLI and Flower."""

from __future__ import annotations

import io
import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import requests
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from app import create_app
from storage.jobs import delete_job, get_job
from tests.support import VENV_BIN, ServiceProcess, free_port, image_bytes, start_worker, wait_until


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus' text format (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def celery(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [str(VENV_BIN / "celery"), "-A", "tasks", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture()
def ops_stack(isolated_env, logs_dir: Path):  # type: ignore[no-untyped-def]
    """An isolated vhost with a worker that serves metrics, and an in-process API client."""
    port = free_port()
    env = {**isolated_env, "WORKER_METRICS_PORT": str(port), "INFERENCE_BATCH_SIZE": "2"}
    worker = start_worker(env, logs_dir / f"worker-ops-{port}.log", queues="inference,maintenance", concurrency=1)
    app = create_app({**env, "TESTING": True})
    yield env, worker, app, f"http://127.0.0.1:{port}/metrics"
    worker.stop()
    app.extensions["yolo_storage"].dispose()


def submit(app, count: int, **form: str) -> str:  # type: ignore[no-untyped-def]
    images = [(io.BytesIO(image_bytes(320, 240, seed=uuid.uuid4().int % 10**6)), f"{i}.png") for i in range(count)]
    data = {**form, "image": images}
    response = app.test_client().post("/api/v1/jobs", data=data, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["job_id"]


def finished(storage, job_id: str):  # type: ignore[no-untyped-def]
    with storage.session() as session:
        job = get_job(session, uuid.UUID(job_id))
    return job if job.is_finished else None


def test_api_metrics_add_up_across_gunicorn_workers(api_url: str) -> None:
    before = requests.get(f"{api_url}/metrics", timeout=5).text
    data = image_bytes(50, 50, seed=uuid.uuid4().int % 10**6)
    for _ in range(4):
        files = [("image", ("m.png", data, "image/png"))]
        assert requests.post(f"{api_url}/api/v1/jobs", files=files, timeout=30).status_code == 202
    assert requests.post(f"{api_url}/api/v1/jobs", data={"conf": "2"}, timeout=30).status_code == 400
    after = requests.get(f"{api_url}/metrics", timeout=5).text
    assert metric(after, "yolo_api_jobs_created_total", status="queued") - metric(
        before, "yolo_api_jobs_created_total", status="queued"
    ) == pytest.approx(4)
    assert metric(after, "yolo_api_jobs_created_total", status="rejected") >= 1
    # deduplicated uploads add no stored bytes: only the first of the four counts
    grown = metric(after, "yolo_api_upload_bytes_total") - metric(before, "yolo_api_upload_bytes_total")
    assert grown in (0, len(data))
    assert metric(after, "yolo_api_requests_total", method="POST", endpoint="/api/v1/jobs", status="202") >= 4


def test_worker_metrics_logs_and_progress(ops_stack, storage) -> None:  # type: ignore[no-untyped-def]
    _env, worker, app, metrics_url = ops_stack
    job_id = submit(app, 4)
    job = wait_until(lambda: finished(storage, job_id), 120, what="job")
    assert job.status == "succeeded"
    text = requests.get(metrics_url, timeout=5).text
    assert metric(text, "yolo_worker_jobs_finished_total", status="succeeded") == 1
    assert metric(text, "yolo_worker_model_load_seconds_count", model="default") == 1
    assert metric(text, "yolo_worker_inference_seconds_count", model="default") == 2  # 4 images in batches of 2
    assert metric(text, "yolo_worker_images_total", model="default") == 4

    lines = worker.json_log_lines()
    about_job = [line for line in lines if job_id in json.dumps(line)]
    assert len(about_job) >= 3
    assert all(line["job_id"] == job_id for line in about_job), [x for x in about_job if x["job_id"] != job_id]
    assert {"job started", "job succeeded"} <= {
        line["message"].split(" attempt")[0].split(" done")[0] for line in about_job
    }


def test_celery_cli_inspect_status_and_call(ops_stack, storage) -> None:  # type: ignore[no-untyped-def]
    env, _worker, app, _ = ops_stack
    assert "tasks.inference.detect" in celery(env, "inspect", "registered", "--timeout", "5")
    assert re.search(r"1 node online", celery(env, "status", "--timeout", "5"))

    job_id = submit(app, 8, imgsz="1280")
    wait_until(lambda: job_id in celery(env, "inspect", "active", "--timeout", "5"), 60, interval=0.5, what="active")
    wait_until(lambda: finished(storage, job_id), 180, what="slow job")

    task_id = celery(env, "call", "tasks.inference.detect", "--args", json.dumps([job_id])).strip()
    uuid.UUID(task_id)
    client = Celery(broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
    assert client.AsyncResult(task_id).get(timeout=60) == {"job_id": job_id, "status": "skipped"}


def strand_copy_of(storage, job_id: str, age: str) -> str:  # type: ignore[no-untyped-def]
    """A queued copy of a job, created ``age`` ago, whose task was never sent (as if the API died after commit)."""
    copy = str(uuid.uuid4())
    with storage.session() as session:
        session.execute(
            text(
                "INSERT INTO jobs (id, model, conf, iou, imgsz, total_files, created_at)"
                " SELECT :copy, model, conf, iou, imgsz, total_files, now() - CAST(:age AS interval)"
                " FROM jobs WHERE id = :job"
            ),
            {"copy": copy, "job": job_id, "age": age},
        )
        session.execute(
            text(
                "INSERT INTO uploads (id, job_id, file_id, position, filename, deduplicated)"
                " SELECT gen_random_uuid(), :copy, file_id, position, filename, true FROM uploads WHERE job_id = :job"
            ),
            {"copy": copy, "job": job_id},
        )
    return copy


def test_a_job_committed_but_never_sent_is_requeued(ops_stack, storage) -> None:  # type: ignore[no-untyped-def]
    env, _worker, app, _ = ops_stack
    original = submit(app, 2)
    wait_until(lambda: finished(storage, original), 180, what="original job")
    stranded = strand_copy_of(storage, original, "1 hour")
    recent = strand_copy_of(storage, original, "1 second")
    try:
        task_id = celery(env, "call", "tasks.maintenance.requeue_stranded_jobs").strip()
        client = Celery(broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
        requeued = client.AsyncResult(task_id).get(timeout=60)["requeued"]
        assert stranded in requeued and recent not in requeued

        job = wait_until(lambda: finished(storage, stranded), 180, what="requeued job")
        assert job.status == "succeeded" and job.enqueued_at is not None
        assert sorted(len(u.result.detections) for u in job.uploads) == sorted(
            len(u.result.detections) for u in finished(storage, original).uploads
        )
        with storage.session() as session:
            young = get_job(session, uuid.UUID(recent))
        assert young.status == "queued" and young.enqueued_at is None  # within the grace period: maybe in flight
    finally:
        with storage.session() as session:
            delete_job(session, uuid.UUID(recent))


def test_flower_shows_id_only_arguments_and_progress_behind_auth(ops_stack, storage, logs_dir: Path) -> None:  # type: ignore[no-untyped-def]
    env, _worker, app, _ = ops_stack
    port = free_port()
    flower = ServiceProcess(
        [str(VENV_BIN / "celery"), "-A", "tasks", "flower", f"--port={port}", "--address=127.0.0.1"],
        {**env, "FLOWER_BASIC_AUTH": "ops:s3cret"},
        logs_dir / f"flower-{port}.log",
    ).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/healthcheck"), 30, what="flower")
        assert requests.get(f"{base}/api/tasks", timeout=5).status_code == 401
        job_id = submit(app, 8, imgsz="1280")
        auth = ("ops", "s3cret")

        def flower_state(path: str) -> dict | None:
            response = requests.get(f"{base}/api/task/{path}/{job_id}", auth=auth, timeout=5)
            return response.json() if response.ok else None

        running = wait_until(
            lambda: (info := flower_state("info")) and info.get("state") == "PROGRESS" and info, 120, 0.1, "PROGRESS"
        )
        assert running["name"] == "tasks.inference.detect"
        assert running["args"] == f"['{job_id}']"  # the job id, nothing else
        assert flower_state("result")["state"] in ("PROGRESS", "SUCCESS")
        backend_state = Celery(backend=env["CELERY_RESULT_BACKEND"]).AsyncResult(job_id)
        if backend_state.state == "PROGRESS":
            assert backend_state.info["total"] == 8 and 0 <= backend_state.info["done"] <= 8
        wait_until(lambda: finished(storage, job_id), 180, what="job")
        done = wait_until(lambda: (info := flower_state("info")) and info["state"] == "SUCCESS" and info, 30)
        assert done["result"].startswith("{") and job_id in done["result"]
        assert "flower_events_total" in requests.get(f"{base}/metrics", timeout=5).text
    finally:
        flower.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.ConnectionError:
        return False

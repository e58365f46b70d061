"""The operator's view of a running stack: metrics, JSON logs, the Celery CLI and Flower."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import requests
from celery import Celery
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from harness.images import image_bytes
from harness.processes import VENV_BIN, ServiceProcess, free_port, start_api, start_worker, wait_until
from harness.services import rabbitmqctl
from jobs.lifecycle import withdraw_job
from jobs.messages import CLEANUP_TASK, REAP_TASK
from storage import Storage
from storage.tables import Job
from tests.conftest import MakeApp
from tests.helpers import TestKey, finished_job, job_state, post_job, submit


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


class OpsStack(NamedTuple):
    env: dict[str, str]
    worker: ServiceProcess
    app: Flask
    metrics_url: str
    storage: Storage


@pytest.fixture()
def ops_stack(
    make_app: MakeApp, isolated_env: dict[str, str], module_database_url: str, logs_dir: Path
) -> Iterator[OpsStack]:
    """An isolated vhost and the module's own database (the reaper test must find only this module's jobs),
    with a worker that serves metrics, and an in-process API client."""
    port = free_port()
    env = {
        **isolated_env,
        "DATABASE_URL": module_database_url,
        "WORKER_METRICS_PORT": str(port),
        "INFERENCE_BATCH_SIZE": "2",
    }
    worker = start_worker(env, logs_dir / f"worker-ops-{port}.log", queues="inference,maintenance", concurrency=1)
    storage = Storage(module_database_url, Path(env["STORAGE_ROOT"]))
    try:
        yield OpsStack(env, worker, make_app(env), f"http://127.0.0.1:{port}/metrics", storage)
    finally:
        worker.stop()
        storage.dispose()


def fresh_images(count: int) -> list[bytes]:
    """``count`` 320x240 images no other job has uploaded (so none is deduplicated)."""
    return [image_bytes(320, 240, seed=uuid.uuid4().int % 10**6) for _ in range(count)]


def test_api_metrics_add_up_across_gunicorn_workers(api: requests.Session, api_url: str, admin_key: TestKey) -> None:
    before = requests.get(f"{api_url}/metrics", headers=admin_key.headers, timeout=5).text
    data = image_bytes(50, 50, seed=uuid.uuid4().int % 10**6)
    for _ in range(4):
        assert post_job(api, api_url, [("m.png", data)]).status_code == 202
    assert post_job(api, api_url, [], conf="2").status_code == 400
    after = requests.get(f"{api_url}/metrics", headers=admin_key.headers, timeout=5).text
    assert metric(after, "yolo_api_jobs_created_total", status="queued") - metric(
        before, "yolo_api_jobs_created_total", status="queued"
    ) == pytest.approx(4)
    assert metric(after, "yolo_api_jobs_created_total", status="rejected") >= 1
    # deduplicated uploads add no stored bytes: only the first of the four counts
    grown = metric(after, "yolo_api_upload_bytes_total") - metric(before, "yolo_api_upload_bytes_total")
    assert grown in (0, len(data))
    assert metric(after, "yolo_api_requests_total", method="POST", endpoint="/api/v1/jobs", status="202") >= 4


def test_worker_metrics_logs_and_progress(ops_stack: OpsStack) -> None:
    _env, worker, app, metrics_url, storage = ops_stack
    job_id = submit(app, fresh_images(4))
    job = wait_until(lambda: finished_job(storage, job_id), 120, what="job")
    assert job.status == "succeeded"
    text = requests.get(metrics_url, timeout=5).text
    assert metric(text, "yolo_worker_jobs_finished_total", status="succeeded") == 1
    assert metric(text, "yolo_worker_model_load_seconds_count", model="shapes") == 1
    # 4 images: one alone to measure the pace (tasks/pacing.py), then a batch of 2, then the last one
    assert metric(text, "yolo_worker_inference_seconds_count", model="shapes") == 3
    assert metric(text, "yolo_worker_images_total", model="shapes") == 4

    lines = worker.json_log_lines()
    about_job = [line for line in lines if job_id in json.dumps(line)]
    assert len(about_job) >= 3
    assert all(line["job_id"] == job_id for line in about_job), [x for x in about_job if x["job_id"] != job_id]
    assert {"job started", "job succeeded"} <= {
        line["message"].split(" attempt")[0].split(" done")[0] for line in about_job
    }


def test_celery_cli_inspect_status_and_call(ops_stack: OpsStack) -> None:
    env, worker, app, _, storage = ops_stack
    registered = celery(env, "inspect", "registered", "--timeout", "5")
    assert {"tasks.detection.detect", CLEANUP_TASK, REAP_TASK} <= set(re.findall(r"\* (\S+)", registered)), registered
    assert re.search(r"1 node online", celery(env, "status", "--timeout", "5"))

    job_id = submit(app, fresh_images(32), imgsz="1280")  # about 8 s: long enough for `inspect active` to see
    wait_until(lambda: job_id in celery(env, "inspect", "active", "--timeout", "5"), 60, interval=0.5, what="active")
    wait_until(lambda: finished_job(storage, job_id), 180, what="slow job")

    task_id = celery(env, "call", "tasks.detection.detect", "--args", json.dumps([job_id])).strip()
    uuid.UUID(task_id)
    # A successful detect stores no result (the job's state lives in PostgreSQL): the worker's log says what it did.
    done = f"tasks.detection.detect[{task_id}] succeeded"
    wait_until(lambda: done in worker.log_text(), 60, interval=0.5, what="the called task")
    line = next(line for line in worker.log_text().splitlines() if done in line)
    assert f"'job_id': '{job_id}'" in line and "'status': 'skipped'" in line, line


def strand_copy_of(storage: Storage, job_id: str, age: str) -> str:
    """A queued copy of a job, created ``age`` ago, whose task was never sent (as if the API died after commit)."""
    copy = str(uuid.uuid4())
    with storage.database.transaction() as session:
        session.execute(
            text(
                "INSERT INTO jobs (id, tenant_id, model, conf, iou, imgsz, total_files, created_at)"
                " SELECT :copy, tenant_id, model, conf, iou, imgsz, total_files, now() - CAST(:age AS interval)"
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


def detection_counts(job: Job) -> list[int]:
    """How many detections each upload's result has (every upload must have one)."""
    counts = []
    for upload in job.uploads:
        assert upload.result is not None, upload.filename
        counts.append(len(upload.result.detections))
    return counts


def test_the_reaper_resends_a_job_committed_but_never_sent(ops_stack: OpsStack) -> None:
    """``celery call tasks.maintenance.reap_jobs`` (what beat runs every minute) sends a job whose API died
    between its commit and the send, once a lease period has passed; a younger one may still be on its way."""
    env, _worker, app, _, storage = ops_stack
    original = submit(app, fresh_images(2))
    wait_until(lambda: finished_job(storage, original), 180, what="original job")
    stranded = strand_copy_of(storage, original, "1 hour")
    recent = strand_copy_of(storage, original, "1 second")
    try:
        task_id = celery(env, "call", REAP_TASK).strip()
        client = Celery(broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
        reaped = client.AsyncResult(task_id).get(timeout=60)
        assert reaped["resent"] == [stranded] and reaped["cancelled"] == [], reaped

        job = wait_until(lambda: finished_job(storage, stranded), 180, what="re-sent job")
        assert job.status == "succeeded" and job.enqueued_at is not None and job.attempts == 1
        assert job.task_id is not None and job.task_id.startswith(f"{stranded}-"), "re-sent under a new task id"
        assert sorted(detection_counts(job)) == sorted(detection_counts(job_state(storage, original)))
        young = job_state(storage, recent)
        assert young.status == "queued" and young.enqueued_at is None  # within the grace period: maybe in flight
    finally:
        with storage.database.transaction() as session:
            withdraw_job(session, uuid.UUID(recent))


def test_flower_shows_id_only_arguments_and_progress_behind_auth(ops_stack: OpsStack, logs_dir: Path) -> None:
    env, _worker, app, _, storage = ops_stack
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
        # Long enough to write its progress more than once (a write at most every 2 s) on a fast CPU too.
        job_id = submit(app, fresh_images(16), imgsz="1280")
        auth = ("ops", "s3cret")

        def flower_state(path: str) -> dict[str, Any] | None:
            response = requests.get(f"{base}/api/task/{path}/{job_id}", auth=auth, timeout=5)
            return response.json() if response.ok else None

        running = wait_until(
            lambda: (info := flower_state("info")) and info.get("state") == "PROGRESS" and info, 120, 0.1, "PROGRESS"
        )
        assert running["name"] == "tasks.detection.detect"
        assert running["args"] == f"['{job_id}']"  # the job id, nothing else
        assert flower_state("result")["state"] in ("PROGRESS", "SUCCESS")
        backend_state = Celery(backend=env["CELERY_RESULT_BACKEND"]).AsyncResult(job_id)
        if backend_state.state == "PROGRESS":
            assert backend_state.info["total"] == 16 and 0 <= backend_state.info["done"] <= 16
        wait_until(lambda: finished_job(storage, job_id), 180, what="job")
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


def test_a_taken_metrics_port_is_said_clearly_and_the_worker_still_runs(
    services_env: dict[str, str], logs_dir: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**services_env, "WORKER_METRICS_PORT": str(port)}
        worker = start_worker(env, logs_dir / f"worker-port-taken-{port}.log", queues="maintenance", concurrency=1)
        try:
            text = worker.log_text()
            assert worker.running()
        finally:
            worker.stop()
    sentence = f"worker metrics are NOT served: listening on 127.0.0.1:{port} is already in use"
    assert text.count(sentence) == 2, text[-3000:]  # at start-up, and again as the worker becomes ready
    assert "set WORKER_METRICS_PORT to a free port, or 0" in text


def test_gunicorn_leaves_no_metrics_folder_behind(services_env: dict[str, str], logs_dir: Path) -> None:
    server, _base_url = start_api(services_env, logs_dir / "gunicorn-metrics-folder.log")
    folder = Path(tempfile.gettempdir()) / f"yolo-jobs-api-metrics-{server.pid}"
    try:
        assert folder.is_dir(), "gunicorn's workers record their metrics here"
    finally:
        server.stop()
    assert not server.running() and not folder.exists()


def test_a_lost_broker_connection_brings_no_deprecation_warning(isolated_env: dict[str, str], logs_dir: Path) -> None:
    """celery_config sets worker_cancel_long_running_tasks_on_connection_loss, so a connection loss
    (RabbitMQ restarted, a network blip) is met without Celery's pending-deprecation warning."""
    vhost = isolated_env["CELERY_BROKER_URL"].rsplit("/", 1)[1]
    worker = start_worker(isolated_env, logs_dir / f"worker-{vhost}.log", queues="maintenance", concurrency=1)
    try:
        rabbitmqctl("close_all_connections", "-p", vhost, "a test drops the worker's connection")
        wait_until(lambda: "Connection to broker lost" in worker.log_text(), 30, what="the worker to notice")
        wait_until(lambda: worker.log_text().count("Connected to amqp://") >= 2, 60, what="the worker to reconnect")
        text = worker.log_text()
        assert worker.running()
    finally:
        worker.stop()
    assert "CPendingDeprecationWarning" not in text and "worker_cancel_long_running_tasks" not in text, text[-3000:]

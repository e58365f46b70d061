"""Real ``celery -A tasks worker`` processes: one model load per child; no job lost to a kill or a database outage."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, make_url, select, text

from app import create_app
from storage.db import make_engine
from storage.jobs import get_job
from storage.models import Result
from tests.support import POSTGRES_URL, ServiceProcess, image_bytes, start_worker, wait_until


def submit(app, images: list[bytes], **form: str) -> str:  # type: ignore[no-untyped-def]
    data = {**form, "image": [(io.BytesIO(b), f"img-{i}.png") for i, b in enumerate(images)]}
    response = app.test_client().post("/api/v1/jobs", data=data, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["job_id"]


def job_state(storage, job_id: str):  # type: ignore[no-untyped-def]
    import uuid

    with storage.session() as session:
        return get_job(session, uuid.UUID(job_id))


@pytest.fixture()
def isolated_app(isolated_env):  # type: ignore[no-untyped-def]
    application = create_app({**isolated_env, "TESTING": True})
    yield application
    application.extensions["yolo_storage"].dispose()


def test_model_loads_once_per_child_process(isolated_env, isolated_app, storage, logs_dir: Path) -> None:  # type: ignore[no-untyped-def]
    worker = start_worker(isolated_env, logs_dir / "worker-model-loads.log", queues="inference", concurrency=2)
    try:
        job_ids = [submit(isolated_app, [image_bytes(64, 64, seed=900 + i)]) for i in range(10)]
        wait_until(lambda: all(job_state(storage, j).status == "succeeded" for j in job_ids), 180, what="10 jobs")
        lines = worker.json_log_lines()
    finally:
        worker.stop()
    loads = [line for line in lines if line["message"].startswith("model loaded")]
    task_pids = {line["pid"] for line in lines if line["message"].startswith("job started")}
    print(
        f"\nmodel loads: {len(loads)} for {len(job_ids)} jobs, pids {sorted(Counter(x['pid'] for x in loads).items())}"
    )
    assert len(loads) == 2, loads
    assert len({line["pid"] for line in loads}) == 2
    assert worker.pid not in {line["pid"] for line in loads}, "the parent process must never load the model"
    assert task_pids <= {line["pid"] for line in loads}
    for line in loads:
        assert line["processName"].startswith("ForkPoolWorker")
        assert "weights=" in line["message"] and "device=cpu" in line["message"] and "seconds=" in line["message"]


def test_worker_killed_mid_job_still_completes_without_duplicates(
    isolated_env, isolated_app, storage, logs_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    env = {**isolated_env, "INFERENCE_BATCH_SIZE": "2"}
    images = [image_bytes(640, 480, seed=700 + i) for i in range(24)]
    first: ServiceProcess = start_worker(env, logs_dir / "worker-killed.log", queues="inference", concurrency=1)
    job_id = submit(isolated_app, images, imgsz="1280")
    try:
        wait_until(lambda: job_state(storage, job_id).done_files >= 2, 120, interval=0.05, what="first progress")
        assert job_state(storage, job_id).status == "running"
    finally:
        first.kill()
    state = job_state(storage, job_id)
    assert state.status == "running" and state.done_files < len(images), "the job finished before the kill"

    second = start_worker(env, logs_dir / "worker-after-kill.log", queues="inference", concurrency=1)
    try:
        wait_until(lambda: job_state(storage, job_id).status == "succeeded", 240, what="job after redelivery")
    finally:
        second.stop()
    final = job_state(storage, job_id)
    assert final.done_files == len(images) and final.attempts >= 2
    with storage.session() as session:
        rows = session.execute(
            select(Result.upload_id, func.count()).where(Result.job_id == final.id).group_by(Result.upload_id)
        ).all()
    assert len(rows) == len(images) and all(count == 1 for _, count in rows)
    assert {u.id for u in final.uploads} == {upload_id for upload_id, _ in rows}


def set_database_open(database: str, open_: bool) -> None:
    """Refuse (and cut) or allow again every connection to ``database``: a database outage."""
    admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(open_).lower()}')
            if not open_:
                connection.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": database}
                )
    finally:
        admin.dispose()


def test_database_outage_while_processing_is_retried(isolated_env, isolated_app, storage, logs_dir: Path) -> None:  # type: ignore[no-untyped-def]
    database = make_url(isolated_env["DATABASE_URL"]).database
    job_id = submit(isolated_app, [image_bytes(64, 64, seed=4100 + i) for i in range(3)])
    set_database_open(database, False)
    worker = start_worker(isolated_env, logs_dir / "worker-db-outage.log", queues="inference", concurrency=1)
    try:
        wait_until(lambda: "Retry in" in worker.log_text(), 60, what="the task to be retried")
        set_database_open(database, True)
        job = wait_until(lambda: (j := job_state(storage, job_id)).is_finished and j, 120, what="job after outage")
    finally:
        set_database_open(database, True)
        worker.stop()
    assert job.status == "succeeded" and job.done_files == 3

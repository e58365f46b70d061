"""A revoke that no worker received still cancels the job.

``celery -A tasks control revoke <job id>`` while no worker is online answers "No nodes
replied": Celery's broadcast reaches nobody. RabbitMQ keeps a copy in the durable
``yolo-jobs.missed-revokes`` queue (``tasks/missed_revokes.py``), and the next worker applies
it before it takes a task; the reaper drains the queue on every run and binds it again after a
broker restart. Real parts: a vhost of the test's own, the real Celery CLI, real
``celery worker`` subprocesses.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from flask import Flask
from kombu import Connection, Exchange, Queue
from sqlalchemy import func, select

from app import extensions
from harness.images import image_bytes
from harness.processes import VENV_BIN, ServiceProcess, start_worker, wait_until
from jobs.lifecycle import retry_job
from jobs.messages import DETECT_TASK, REAP_TASK
from storage import Storage
from storage.tables import Result
from tasks.missed_revokes import MISSED_REVOKES
from tests.conftest import MakeApp
from tests.helpers import job_state, submit, wait_for_finished

# Celery's broadcast exchange, which the missed-revokes queue is bound to.
PIDBOX_EXCHANGE = Exchange("celery.pidbox", type="fanout")
# Images in the job a plain revoke stops: at imgsz 1280, about 20 s of work, so that two CLI calls (a revoke, then
# the reaper's run), each seconds long on a busy machine, come well before its end; cancelled, it stops early.
IMAGES = 80


def celery_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "celery"), "-A", "tasks", *args], env=env, capture_output=True, text=True, timeout=60
    )


def result_count(storage: Storage, job_id: str) -> int:
    with storage.database.transaction() as session:
        return session.scalar(select(func.count()).select_from(Result).where(Result.job_id == uuid.UUID(job_id)))


@pytest.fixture()
def broker_env(isolated_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A vhost of the test's own; the missed-revokes queue the workers made there is deleted after."""
    yield isolated_env
    with Connection(isolated_env["CELERY_BROKER_URL"]) as connection:
        Queue(MISSED_REVOKES, channel=connection.default_channel).delete()


def test_a_revoke_sent_while_no_worker_is_online_cancels_the_job(
    make_app: MakeApp, broker_env: dict[str, str], storage: Storage, logs_dir: Path
) -> None:
    env = broker_env
    app: Flask = make_app(env)
    logs = logs_dir / "offline-revoke"
    # A worker has run on this broker before (as in any deployment), and none is online now.
    start_worker(env, logs / "earlier-worker.log", queues="inference").stop()
    job_id = submit(app, [image_bytes(64, 64, seed=1700)])

    revoke = celery_cli(env, "control", "revoke", job_id)
    assert revoke.returncode != 0 and "No nodes replied" in revoke.stdout + revoke.stderr, revoke

    worker = start_worker(env, logs / "next-worker.log", queues="inference")
    try:
        job = wait_for_finished(storage, job_id)
        assert job.status == "cancelled", job.status
        assert job.attempts == 0 and job.started_at is None and result_count(storage, job_id) == 0
        assert "applied a revoke kept in the missed-revokes queue" in worker.log_text()
        # Its message, delivered afterwards, is dropped unrun; Flower shows REVOKED.
        wait_until(lambda: f"Task {DETECT_TASK}[{job_id}] ignored" in worker.log_text(), 60, what="the message")
        backend = Celery(broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
        assert backend.AsyncResult(job_id).state == "REVOKED"
        assert job_state(storage, job_id).status == "cancelled" and result_count(storage, job_id) == 0
    finally:
        worker.stop()


def test_a_job_queued_again_by_a_retry_is_not_cancelled_by_the_revoke_of_its_cancel(
    make_app: MakeApp, broker_env: dict[str, str], storage: Storage, logs_dir: Path
) -> None:
    """The API's retry queues the job again under its old task id, then sends and records a new one: a worker
    that starts in between must not apply the revoke that the job's cancel broadcast to the old id."""
    env = broker_env
    app: Flask = make_app(env)
    logs = logs_dir / "offline-revoke"
    start_worker(env, logs / "retry-earlier-worker.log", queues="inference").stop()
    job_id = submit(app, [image_bytes(64, 64, seed=1900)])
    assert app.test_client().post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202  # revokes its task, unheard
    with storage.database.transaction() as session:  # the retry's first step: queued again, no new task yet
        assert retry_job(session, uuid.UUID(job_id))

    worker = start_worker(env, logs / "retry-next-worker.log", queues="inference")
    try:
        job = wait_for_finished(storage, job_id)  # its old message runs it: any message of a queued job does
        assert job.status == "succeeded", job.status
        assert "applied a revoke" not in worker.log_text()
    finally:
        worker.stop()


def held_broadcasts(env: dict[str, str]) -> int:
    with Connection(env["CELERY_BROKER_URL"]) as connection:
        return Queue(MISSED_REVOKES, channel=connection.default_channel).queue_declare(passive=True).message_count


def reap(env: dict[str, str], maintenance: ServiceProcess) -> None:
    """Run the reaper once, now (beat would every REAPER_INTERVAL_SECONDS), and wait until it is done."""
    task_id = celery_cli(env, "call", REAP_TASK).stdout.strip()
    done = f"Task {REAP_TASK}[{task_id}] succeeded"
    wait_until(lambda: done in maintenance.log_text(), 60, what="the reaper's run")


@pytest.fixture()
def reaper_env(broker_env: dict[str, str], module_database_url: str) -> dict[str, str]:
    """With a database of the module's own too: the reaper must not touch other tests' jobs."""
    return {**broker_env, "DATABASE_URL": module_database_url}


def test_the_reaper_drains_the_queue_and_binds_it_again_after_a_broker_restart(
    reaper_env: dict[str, str], logs_dir: Path
) -> None:
    env = reaper_env
    maintenance = start_worker(env, logs_dir / "offline-revoke" / "maintenance.log", queues="maintenance")
    try:
        # A broker restart drops the binding (the pidbox exchange is transient) and keeps the durable queue.
        with Connection(env["CELERY_BROKER_URL"]) as connection:
            Queue(MISSED_REVOKES, channel=connection.default_channel).unbind_from(PIDBOX_EXCHANGE)
        assert celery_cli(env, "inspect", "ping").returncode == 0
        assert held_broadcasts(env) == 0
        reap(env, maintenance)
        assert celery_cli(env, "inspect", "ping").returncode == 0
        assert held_broadcasts(env) == 1  # bound again
        reap(env, maintenance)
        assert held_broadcasts(env) == 0  # drained
    finally:
        maintenance.stop()


def test_a_plain_revoke_of_a_running_job_cancels_it_at_the_reapers_next_run(
    make_app: MakeApp, reaper_env: dict[str, str], logs_dir: Path
) -> None:
    """Celery only flags a running task that a revoke without terminate names; the reaper cancels its job."""
    env = reaper_env
    app = make_app(env)
    storage = app.extensions[extensions.EXTENSION].storage
    logs = logs_dir / "offline-revoke"
    maintenance = start_worker(env, logs / "running-maintenance.log", queues="maintenance")
    worker = start_worker(env, logs / "running-worker.log", queues="inference")
    try:
        job_id = submit(app, [image_bytes(640, 480, seed=1800 + i) for i in range(IMAGES)], imgsz="1280")
        wait_until(lambda: job_state(storage, job_id).done_files >= 2, 120, interval=0.05, what="progress")
        assert celery_cli(env, "control", "revoke", job_id).returncode == 0  # the workers online reply
        reap(env, maintenance)
        job = wait_for_finished(storage, job_id)
        print(f"\nplain revoke of a running job: {job.status} with {job.done_files} of {IMAGES} images done")
        assert job.status == "cancelled" and job.done_files < IMAGES, (job.status, job.done_files)
        assert result_count(storage, job_id) == job.done_files  # the results it had are kept
    finally:
        worker.stop()
        maintenance.stop()

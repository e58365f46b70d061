"""Every accepted job reaches an end: cancel, retry, revoke and terminate, leases, the reaper, outages, kills.

One stack for the module, with a database and vhost of its own (its reaper must not
touch other modules' jobs): an inference worker, a maintenance worker, beat running
the reaper every 2 s with 5 s leases, and an in-process API. Faults are real: the
worker's process group SIGKILLed, the database closed to connections, the queue purged.
"""

from __future__ import annotations

import io
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from celery import Celery
from flask import Flask
from kombu import Connection
from PIL import Image
from sqlalchemy import func, make_url, select, text

from app import extensions
from config import Settings
from harness import services
from harness.costs import RedisMonitor
from harness.images import image_bytes
from harness.processes import VENV_BIN, ServiceProcess, start_worker, wait_until
from jobs.messages import DETECT_TASK
from storage import Storage
from storage.tables import Result
from tests.conftest import keyed_app
from tests.helpers import job_state, submit

LEASE_SECONDS = 5
# Many times the pixels of the model's own size: a job of 10 or more 640x480 images still runs seconds after its
# first result, even on the OpenVINO worker (6 were done before a cancel could land).
SLOW = {"imgsz": "1280"}


@dataclass
class Stack:
    env: dict[str, str]
    app: Flask
    storage: Storage
    logs: Path
    worker: ServiceProcess
    celery: Celery

    def restart_worker(self, name: str) -> ServiceProcess:
        self.worker = start_inference_worker(self.env, self.logs / f"{name}.log")
        return self.worker


def start_inference_worker(env: dict[str, str], log_path: Path) -> ServiceProcess:
    return start_worker(env, log_path, queues="inference", concurrency=2)


def celery_cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [str(VENV_BIN / "celery"), "-A", "tasks", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def stack(services_env: dict[str, str], run_id: str, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    name = f"yolo_test_{run_id}_lifecycle"
    vhost = f"yolo-test-{run_id}-lifecycle"
    env = {
        **services_env,
        "DATABASE_URL": services.create_database(name),
        "CELERY_BROKER_URL": services.create_vhost(vhost),
        "STORAGE_ROOT": str(tmp_path_factory.mktemp("lifecycle-storage")),
        "JOB_LEASE_SECONDS": str(LEASE_SECONDS),
        "REAPER_INTERVAL_SECONDS": "2",
        "INFERENCE_BATCH_SIZE": "2",
    }
    logs = logs_dir / "lifecycle"
    settings = Settings.from_env(env)
    app = keyed_app(settings)  # its test client sends a key of tenant "test" in this module's database
    storage = Storage(settings.database_url, settings.storage_root)
    maintenance = start_worker(env, logs / "maintenance.log", queues="maintenance", concurrency=1)
    beat = ServiceProcess(
        [str(VENV_BIN / "celery"), "-A", "tasks", "beat", "--loglevel", "INFO", "-s", str(logs / "beat-schedule")],
        env,
        logs / "beat.log",
    ).start()
    worker = start_inference_worker(env, logs / "worker.log")
    celery = Celery(broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
    current = Stack(env, app, storage, logs, worker, celery)
    try:
        yield current
    finally:
        for process in (current.worker, maintenance, beat):
            process.stop()
        extensions.dispose(app)
        storage.dispose()
        services.delete_vhost(vhost)
        services.drop_database(name)


def consume(stack: Stack, on: bool) -> None:
    """Tell the inference worker alone to stop or resume taking messages (they wait in the queue)."""
    assert stack.worker.node is not None
    command = "add_consumer" if on else "cancel_consumer"
    celery_cli(stack.env, "control", command, "inference", "-d", stack.worker.node)


@pytest.fixture()
def paused(stack: Stack) -> Iterator[None]:
    """The inference worker takes no message until the test resumes it (or ends)."""
    consume(stack, False)
    try:
        yield
    finally:
        consume(stack, True)


def images(count: int, seed: int) -> list[bytes]:
    return [image_bytes(640, 480, seed=seed + i) for i in range(count)]


def status(stack: Stack, job_id: str) -> str:
    return job_state(stack.storage, job_id).status


def wait_for_status(stack: Stack, job_id: str, wanted: str, timeout: float = 120) -> None:
    wait_until(lambda: status(stack, job_id) == wanted, timeout, interval=0.1, what=f"job {job_id} {wanted}")


def wait_for_progress(stack: Stack, job_id: str, done: int = 1) -> None:
    wait_until(lambda: job_state(stack.storage, job_id).done_files >= done, 120, interval=0.05, what="progress")


def result_rows(stack: Stack, job_id: str) -> dict[uuid.UUID, int]:
    """Results per upload of the job (a count above 1 would be a duplicate)."""
    with stack.storage.database.transaction() as session:
        query = select(Result.upload_id, func.count()).where(Result.job_id == uuid.UUID(job_id))
        return dict(session.execute(query.group_by(Result.upload_id)).all())


def assert_one_result_per_file(stack: Stack, job_id: str) -> None:
    job = job_state(stack.storage, job_id)
    rows = result_rows(stack, job_id)
    assert set(rows) == {u.id for u in job.uploads} and set(rows.values()) == {1}


def task_state(stack: Stack, task_id: str) -> str:
    return stack.celery.AsyncResult(task_id).state


def log_time(worker: ServiceProcess, message: str, job_id: str) -> datetime:
    line = next(x for x in worker.json_log_lines() if x.get("job_id") == job_id and message in x["message"])
    return datetime.fromisoformat(line["time"])


# Cancel


def test_cancel_a_queued_job_it_never_runs(stack: Stack, paused: None) -> None:
    client = stack.app.test_client()
    job_id = submit(stack.app, images(2, 100))
    response = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202 and response.get_json()["status"] == "cancelled"
    assert response.get_json()["finished_at"] is not None
    wait_until(lambda: task_state(stack, job_id) == "REVOKED", 10, what="the revoke in the result backend")
    consume(stack, True)  # the message is delivered, and discarded
    wait_until(lambda: f"Discarding revoked task: {DETECT_TASK}[{job_id}]" in stack.worker.log_text(), 30)
    job = job_state(stack.storage, job_id)
    assert job.status == "cancelled" and job.attempts == 0 and job.started_at is None
    assert result_rows(stack, job_id) == {}


def test_cancel_a_running_job_stops_at_a_batch_boundary_with_its_results(stack: Stack) -> None:
    client = stack.app.test_client()
    job_id = submit(stack.app, images(12, 200), **SLOW)
    wait_for_progress(stack, job_id, 2)
    requested = time.time()
    response = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202 and response.get_json()["status"] == "cancelled"
    wait_until(lambda: "stopped at a batch boundary" in stack.worker.log_text(), 60, what="the attempt to stop")
    stopped = log_time(stack.worker, "stopped at a batch boundary", job_id).timestamp()
    print(f"\ncancel of a running job: the attempt stopped {stopped - requested:.2f} s after the request")
    time.sleep(1)
    job = job_state(stack.storage, job_id)
    assert job.status == "cancelled" and 2 <= job.done_files < 12
    assert len(result_rows(stack, job_id)) == job.done_files  # kept, and nothing written after the cancel
    assert task_state(stack, job_id) == "REVOKED"


def test_cancel_a_finished_job_is_409(stack: Stack) -> None:
    client = stack.app.test_client()
    job_id = submit(stack.app, images(1, 300))
    wait_for_status(stack, job_id, "succeeded")
    response = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "already_finished"
    assert client.post(f"/api/v1/jobs/{uuid.uuid4()}/cancel").status_code == 404


# Retry


def test_retry_a_cancelled_job_processes_the_rest_once(stack: Stack) -> None:
    client = stack.app.test_client()
    job_id = submit(stack.app, images(12, 400), **SLOW)
    wait_for_progress(stack, job_id, 2)
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    done_before = job_state(stack.storage, job_id).done_files
    response = client.post(f"/api/v1/jobs/{job_id}/retry")
    body = response.get_json()
    assert response.status_code == 202 and body["status"] == "queued" and body["finished_at"] is None
    assert body["task_id"].startswith(job_id) and body["task_id"] != job_id  # a new message id
    wait_for_status(stack, job_id, "succeeded")
    assert_one_result_per_file(stack, job_id)
    assert job_state(stack.storage, job_id).done_files == 12 > done_before


def test_retry_a_failed_job_succeeds_and_other_statuses_are_409(stack: Stack) -> None:
    client = stack.app.test_client()
    job_id = submit(stack.app, images(3, 500))
    wait_for_status(stack, job_id, "succeeded")
    assert client.post(f"/api/v1/jobs/{job_id}/retry").get_json()["error"]["code"] == "not_retryable"
    with stack.storage.database.transaction() as session:  # as if its worker had failed it half-way
        session.execute(
            text(
                "UPDATE jobs SET status = 'failed', error_code = 'internal_error', error_message = 'boom',"
                " attempts = 11 WHERE id = :id"
            ),
            {"id": job_id},
        )
        session.execute(
            text("DELETE FROM results WHERE upload_id IN (SELECT id FROM uploads WHERE job_id = :id AND position > 0)"),
            {"id": job_id},
        )
    response = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 202 and response.get_json()["error"] is None
    wait_for_status(stack, job_id, "succeeded")
    job = job_state(stack.storage, job_id)
    assert job.attempts == 1 and job.error_code is None  # the attempt cap counts afresh
    assert_one_result_per_file(stack, job_id)


# Two deliveries (before the terminate test: a pool whose child was just replaced may hand both to one child)


def test_two_deliveries_while_the_first_attempt_lives_only_one_writes(stack: Stack) -> None:
    job_id = submit(stack.app, images(16, 800), **SLOW)
    wait_for_progress(stack, job_id, 1)
    duplicate = f"{job_id}-duplicate"
    stack.celery.send_task(DETECT_TASK, args=[job_id], task_id=duplicate, queue="inference", routing_key="inference")
    wait_until(lambda: "another attempt holds its lease" in stack.worker.log_text(), 60, what="the duplicate")
    wait_for_status(stack, job_id, "succeeded")
    assert job_state(stack.storage, job_id).attempts == 1
    assert_one_result_per_file(stack, job_id)


# Revoke and terminate through the Celery CLI (what Flower's buttons do)


def test_revoke_of_a_queued_job_cancels_it(stack: Stack, paused: None) -> None:
    job_id = submit(stack.app, images(2, 600))
    celery_cli(stack.env, "control", "revoke", job_id)
    consume(stack, True)
    wait_for_status(stack, job_id, "cancelled", 30)
    job = job_state(stack.storage, job_id)
    assert job.attempts == 0 and result_rows(stack, job_id) == {}
    assert task_state(stack, job_id) == "REVOKED"


def test_terminate_of_a_running_job_cancels_it(stack: Stack) -> None:
    # 32 images at 1280 take the worker about 8 s: the CLI (2 s to start) terminates it well before its end.
    job_id = submit(stack.app, images(32, 700), **SLOW)
    wait_for_progress(stack, job_id, 2)
    celery_cli(stack.env, "control", "terminate", "SIGTERM", job_id)
    wait_for_status(stack, job_id, "cancelled", 30)
    assert task_state(stack, job_id) == "REVOKED"
    job = job_state(stack.storage, job_id)
    assert job.done_files < 32 and len(result_rows(stack, job_id)) == job.done_files
    # The pool replaced the killed child; the worker goes on serving.
    after = submit(stack.app, images(1, 750))
    wait_for_status(stack, after, "succeeded")


# Faults


def test_a_purged_queued_job_is_resent_by_the_reaper(stack: Stack) -> None:
    consume(stack, False)
    try:
        job_id = submit(stack.app, images(2, 900))
        with Connection(stack.env["CELERY_BROKER_URL"]) as connection:
            purged = connection.default_channel.queue_purge("inference")
        assert purged == 1
    finally:
        consume(stack, True)
    wait_for_status(stack, job_id, "succeeded", 60)
    job = job_state(stack.storage, job_id)
    assert job.task_id != job_id and job.attempts == 1  # re-sent under a new task id
    assert_one_result_per_file(stack, job_id)


def test_worker_killed_and_back_after_the_lease_completes_the_job_once(stack: Stack) -> None:
    job_id = submit(stack.app, images(10, 1000), **SLOW)
    wait_for_progress(stack, job_id, 2)
    stack.worker.kill()  # SIGKILL to the whole process group: master and children
    state = job_state(stack.storage, job_id)
    assert state.status == "running" and state.done_files < 10
    time.sleep(LEASE_SECONDS + 1)
    assert job_state(stack.storage, job_id).lease_expires_at < datetime.now(state.lease_expires_at.tzinfo)
    stack.restart_worker("worker-after-kill")
    wait_for_status(stack, job_id, "succeeded", 180)
    assert job_state(stack.storage, job_id).attempts >= 2
    assert_one_result_per_file(stack, job_id)


@pytest.mark.slow
def test_a_60_second_database_outage_loses_no_job(stack: Stack) -> None:
    database = make_url(stack.env["DATABASE_URL"]).database
    job_ids = [submit(stack.app, images(2, 2000 + 10 * i)) for i in range(29)]
    job_ids.insert(0, submit(stack.app, images(8, 1900), **SLOW))
    wait_for_progress(stack, job_ids[0], 1)
    services.set_database_open(database, False)
    try:
        time.sleep(60)
    finally:
        services.set_database_open(database, True)
    reopened = time.monotonic()
    for job_id in job_ids:
        wait_for_status(stack, job_id, "succeeded", 300)
    last = time.monotonic() - reopened
    statuses = [status(stack, j) for j in job_ids]
    print(f"\n60 s database outage, 30 jobs: {statuses.count('succeeded')} succeeded; last finished {last:.1f} s after")
    for job_id in job_ids:
        assert_one_result_per_file(stack, job_id)


# Several jobs per round (tasks/intake.py). The worker's consumer holds one message per process
# (two here): the jobs queued behind them are taken into rounds by whichever process starts first.


def round_sizes(stack: Stack) -> list[int]:
    lines = [x["message"] for x in stack.worker.json_log_lines() if x["message"].startswith("round finished")]
    return [int(line.split("jobs=")[1].split()[0]) for line in lines]


def test_a_round_runs_queued_jobs_together_and_a_poison_job_fails_alone(stack: Stack, paused: None) -> None:
    rounds_before = len(round_sizes(stack))
    job_ids = [submit(stack.app, images(1, 1200 + n)) for n in range(5)]
    poison = job_ids[3]
    with stack.storage.database.transaction() as session:
        # A model this worker does not have (the registry changed behind the job's back): it cannot run.
        session.execute(text("UPDATE jobs SET model = 'withdrawn' WHERE id = :id"), {"id": poison})
    consume(stack, True)
    for job_id in job_ids:
        wait_for_status(stack, job_id, "failed" if job_id == poison else "succeeded")
    poisoned = job_state(stack.storage, poison)
    assert poisoned.error_code == "model_unavailable" and result_rows(stack, poison) == {}
    for job_id in job_ids:
        if job_id != poison:
            assert job_state(stack.storage, job_id).attempts == 1
            assert_one_result_per_file(stack, job_id)
    assert max(round_sizes(stack)[rounds_before:]) >= 3, stack.worker.log_text()[-3000:]


def large_flat_png(shade: int, size: tuple[int, int] = (8000, 6000)) -> bytes:
    """A PNG of tens of megapixels in a few kilobytes: slow to decode for its size, so a round of them lasts."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (shade, shade, shade)).save(buffer, format="PNG")
    return buffer.getvalue()


def round_of_large_jobs(stack: Stack, shades: range) -> list[str]:
    """A job of two large images per shade: a round takes jobs of one batch at most (INFERENCE_BATCH_SIZE 2 here).

    The last job, the one the tests act on, is taken into a round last and runs for its own batch alone, so its
    images are the largest (96 megapixels): on a quiet machine, one image of 24 had run in a quarter of a second,
    before a test polling its status could act on it.
    """
    *firsts, last = shades
    jobs = [submit(stack.app, [large_flat_png(shade), large_flat_png(shade + 1)]) for shade in firsts]
    largest = (12000, 8000)
    return [*jobs, submit(stack.app, [large_flat_png(last, largest), large_flat_png(last + 1, largest)])]


def test_a_job_cancelled_in_mid_round_ends_cancelled_and_its_mates_succeed(stack: Stack, paused: None) -> None:
    job_ids = round_of_large_jobs(stack, range(0, 200, 40))
    mate = job_ids[-1]  # queued behind the two messages the consumer holds: taken into a round
    consume(stack, True)
    wait_for_status(stack, mate, "running")
    assert stack.app.test_client().post(f"/api/v1/jobs/{mate}/cancel").status_code == 202
    for job_id in job_ids[:-1]:
        wait_for_status(stack, job_id, "succeeded")
        assert_one_result_per_file(stack, job_id)
    wait_until(lambda: "round-mate stopped without writing" in stack.worker.log_text(), 30, what="the mid-round stop")
    assert status(stack, mate) == "cancelled" and result_rows(stack, mate) == {}


def test_a_single_image_job_writes_no_celery_state_to_redis(stack: Stack) -> None:
    """The job's state lives in PostgreSQL: no STARTED, PROGRESS or SUCCESS result for a one-image job."""
    warm = submit(stack.app, images(1, 1400))
    wait_for_status(stack, warm, "succeeded")
    monitor = RedisMonitor(stack.env["CELERY_RESULT_BACKEND"])
    try:
        job_id = submit(stack.app, images(1, 1401))
        wait_for_status(stack, job_id, "succeeded")
        wait_until(lambda: "Task tasks.detection.detect[" + job_id in stack.worker.log_text(), 10, what="the task end")
    finally:
        commands = monitor.stop(about=job_id)  # another test's revoke may still be written meanwhile
    # The worker's one read (the revoked-while-queued check, an MGET), and nothing written: no state, no subscription.
    assert set(commands) <= {"MGET"} and commands["MGET"] <= 1, commands


def skipped_deliveries(stack: Stack) -> int:
    """Deliveries the worker left alone: the job was finished or held (alone, or taken into a round)."""
    return sum("not started" in x["message"] for x in stack.worker.json_log_lines())


def test_a_second_message_for_a_job_in_a_round_writes_nothing_twice(stack: Stack, paused: None) -> None:
    skipped = skipped_deliveries(stack)
    job_ids = [submit(stack.app, images(1, 1500 + n)) for n in range(4)]
    for job_id in job_ids[2:]:  # taken into a round beside their first message, or after it
        duplicate = f"{job_id}-again"
        stack.celery.send_task(
            DETECT_TASK, args=[job_id], task_id=duplicate, queue="inference", routing_key="inference"
        )
    consume(stack, True)
    for job_id in job_ids:
        wait_for_status(stack, job_id, "succeeded")
    wait_until(lambda: skipped_deliveries(stack) >= skipped + 2, 30, what="both second messages skipped")
    for job_id in job_ids:
        assert job_state(stack.storage, job_id).attempts == 1
        assert_one_result_per_file(stack, job_id)


def test_a_worker_killed_in_mid_round_completes_every_job_of_the_round_once(stack: Stack, paused: None) -> None:
    job_ids = round_of_large_jobs(stack, range(5, 150, 30))
    consume(stack, True)
    mate = job_ids[-1]
    wait_for_status(stack, mate, "running")
    stack.worker.kill()  # SIGKILL to the whole process group: the round's messages go back to the queue
    stack.restart_worker("worker-after-round-kill")
    for job_id in job_ids:
        wait_for_status(stack, job_id, "succeeded", 180)
        assert_one_result_per_file(stack, job_id)
    assert job_state(stack.storage, mate).attempts == 2

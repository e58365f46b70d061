"""A worker told to stop (SIGTERM, as Kubernetes stops a pod an autoscaler scales in) finishes the job it is
running and takes no other: Celery's warm shutdown. The job it ran ends once, and the one waiting behind it is
left in the queue for the next worker, run once there.

The signal goes to the worker's main process alone, as the kubelet sends it to a container's first process (a
whole process group signalled would reach the prefork children too), as soon as the job's attempt began. The
job is long enough (a dozen images inferred at 1280 px on a CPU) that the signal lands while it runs; the
worker's log shows it did.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

from kombu import Connection

import celery_config
from harness.images import image_bytes
from harness.processes import start_worker, wait_until
from storage import Storage
from tests.conftest import MakeApp
from tests.helpers import finished_job, job_state, submit

IMAGES = 12  # about 3 s of work here once the job started
SLOW = {"imgsz": "1280"}  # a job at a larger size runs alone (no round mates), paced: a write every 2 s at most
WARM_SHUTDOWN = "worker: Warm shutdown"


def fresh_images(count: int) -> list[bytes]:
    return [image_bytes(320, 240, seed=uuid.uuid4().int % 10**6) for _ in range(count)]


def ready_messages(broker_url: str) -> int:
    """The inference queue's ready messages, as RabbitMQ counts them now (a passive declare)."""
    with Connection(broker_url) as connection:
        queue = celery_config.QUEUES[0](connection.default_channel)
        return int(queue.queue_declare(passive=True).message_count)


def test_sigterm_mid_job_finishes_it_once_and_leaves_the_next_job_to_another_worker(
    make_app: MakeApp, isolated_env: dict[str, str], storage: Storage, logs_dir: Path
) -> None:
    env = isolated_env
    app = make_app(env)
    first = start_worker(env, logs_dir / f"worker-sigterm-{uuid.uuid4().hex[:6]}.log", "inference", concurrency=1)
    try:
        running = submit(app, fresh_images(IMAGES), **SLOW)
        waiting = submit(app, fresh_images(2), **SLOW)
        wait_until(lambda: job_state(storage, running).status == "running", 120, interval=0.05, what="the job's start")
        os.kill(first.pid, signal.SIGTERM)
        assert first.process is not None
        assert first.process.wait(timeout=60) == 0, first.log_text()[-3000:]
    finally:
        first.stop()

    log = first.log_text()
    assert log.index(WARM_SHUTDOWN) < log.index(f'"message": "job succeeded done={IMAGES} total={IMAGES}"'), (
        "the signal came mid-job, and the job went on to its end"
    )
    ran = job_state(storage, running)
    assert (ran.status, ran.attempts, ran.done_files) == ("succeeded", 1, IMAGES)
    assert all(upload.result is not None and upload.result.error is None for upload in ran.uploads)
    # The worker took nothing after the signal: the next job waits, its message ready, the first one acknowledged.
    assert waiting not in log
    left = job_state(storage, waiting)
    assert (left.status, left.attempts) == ("queued", 0)
    assert ready_messages(env["CELERY_BROKER_URL"]) == 1

    second = start_worker(env, logs_dir / f"worker-sigterm-{uuid.uuid4().hex[:6]}.log", "inference", concurrency=1)
    try:
        done = wait_until(lambda: finished_job(storage, waiting), 120, what="the waiting job")
    finally:
        second.stop()
    assert (done.status, done.attempts, done.done_files) == ("succeeded", 1, 2)
    assert running not in second.log_text(), "the job the first worker finished was not delivered again"
    assert job_state(storage, running).attempts == 1

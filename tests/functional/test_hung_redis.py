"""A Redis that hangs costs no more than one that is down: submissions, ``/healthz``, jobs and beat go on.

A network partition looks, from the client, like a redis-server stopped with SIGSTOP:
the kernel still accepts connections, nothing answers. The tests start a redis-server
of their own (Debian's binary, on a free loopback port, nothing saved) as the only
Redis of a real stack: a gunicorn API whose rate limiter keeps its counters there, a
``celery worker`` and beat whose result backend it is. Then they stop it and measure:
each submission and each ``/healthz`` answers promptly, every queued job runs and
succeeds (its progress updates skipped), each task's revoked check gives up within a
second, and beat keeps sending on time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import redis
import requests

from harness import services
from harness.images import image_bytes
from harness.processes import (
    VENV_BIN,
    ServiceProcess,
    free_port,
    start_api,
    start_worker,
    wait_for_job,
    wait_until,
)
from storage import Storage
from tests.helpers import TestKey, add_key

pytestmark = pytest.mark.slow

SMALL_JOBS = 16  # one image each: what the worker found queued in the reproduction
LARGE_JOB_IMAGES = 12  # at imgsz 1280 a job long enough to write progress (every 2 s) while Redis hangs
# Bounds with room for a loaded 2-core machine; what they bound took 120 s or for ever before.
ANSWER_SECONDS = 5.0
HEALTHZ_SECONDS = 3.0
REVOKED_CHECK_SECONDS = 1.0
JOBS_END_SECONDS = 90  # all of them, from the hang
CLIENT_TIMEOUT = 15
REVOKED_CHECK = re.compile(r"revoked check gave up after ([0-9.]+) s")


@dataclass
class RedisServer:
    """A redis-server of the test's own, on a free loopback port, saving nothing."""

    directory: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "Debian's redis-server is missing: run scripts/ensure-services.sh"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*argv, "--dir", str(self.directory)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(lambda: _pings(self.url) or self.process.poll() is not None, 10, what="redis-server")
        assert self.process.poll() is None, "redis-server exited"

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()  # SIGKILL ends a stopped process too
            self.process.wait(timeout=10)

    @contextmanager
    def hung(self) -> Iterator[None]:
        """The server stopped (SIGSTOP) for the block, and answering again (SIGCONT) after, whatever happened."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)

    @contextmanager
    def down(self) -> Iterator[None]:
        """No server for the block (connections refused); a fresh one on the same port after."""
        self.kill()
        try:
            yield
        finally:
            self.start()


def _pings(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("hung-redis"), logs_dir / "hung-redis-server.log")
    try:
        server.start()
        yield server
    finally:
        server.kill()


@dataclass
class Stack:
    env: dict[str, str]
    api_url: str
    key: TestKey
    worker: ServiceProcess
    logs: Path


@pytest.fixture(scope="module")
def stack(
    services_env: dict[str, str],
    run_id: str,
    logs_dir: Path,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """gunicorn and an inference worker on a database and vhost of their own, with ``redis_server`` as their Redis."""
    name, vhost = f"yolo_test_{run_id}_hung_redis", f"yolo-test-{run_id}-hung-redis"
    logs = logs_dir / "hung-redis"
    with ExitStack() as cleanup:
        env = {
            **services_env,
            "DATABASE_URL": services.create_database(name),
            "CELERY_RESULT_BACKEND": redis_server.url,  # the rate limiter's too (RATE_LIMIT_STORAGE_URL unset)
            "STORAGE_ROOT": str(tmp_path_factory.mktemp("hung-redis-storage")),
        }
        cleanup.callback(services.drop_database, name)
        env["CELERY_BROKER_URL"] = services.create_vhost(vhost)
        cleanup.callback(services.delete_vhost, vhost)
        storage = Storage(env["DATABASE_URL"], Path(env["STORAGE_ROOT"]))
        try:
            key = add_key(storage, "hung-redis")
        finally:
            storage.dispose()
        server, api_url = start_api(env, logs / "gunicorn.log")
        cleanup.callback(server.stop)
        worker = start_worker(env, logs / "worker.log", queues="inference", concurrency=2)
        cleanup.callback(worker.stop)
        yield Stack(env, api_url, key, worker, logs)


@dataclass
class Timed:
    seconds: float
    status: int | None  # None: no answer within CLIENT_TIMEOUT
    body: dict[str, object] | None


def timed(call: Callable[[], requests.Response]) -> Timed:
    started = time.monotonic()
    try:
        response = call()
    except requests.Timeout:
        return Timed(time.monotonic() - started, None, None)
    return Timed(time.monotonic() - started, response.status_code, response.json())


def submit(stack: Stack, images: list[bytes], **form: str) -> Timed:
    files = [("image", (f"{i}.png", data, "application/octet-stream")) for i, data in enumerate(images)]
    url = f"{stack.api_url}/api/v1/jobs"
    return timed(lambda: requests.post(url, files=files, data=form, headers=stack.key.headers, timeout=CLIENT_TIMEOUT))


def healthz(stack: Stack) -> Timed:
    return timed(lambda: requests.get(f"{stack.api_url}/healthz", timeout=CLIENT_TIMEOUT))


def job_id(answer: Timed) -> str:
    assert answer.status == 202 and answer.body is not None, answer
    return str(answer.body["job_id"])


def revoked_check_seconds(worker: ServiceProcess) -> list[float]:
    """How long each revoked check the worker gave up on waited, from its log."""
    return [float(m.group(1)) for line in worker.json_log_lines() if (m := REVOKED_CHECK.search(line["message"]))]


def progress_skipped(worker: ServiceProcess) -> int:
    return sum("could not publish progress" in line["message"] for line in worker.json_log_lines())


def test_a_hung_redis_stalls_no_submission_healthz_or_job(stack: Stack, redis_server: RedisServer) -> None:
    # Warm: the worker has its model, and every process holds connections to Redis from before the hang.
    warm = submit(stack, [image_bytes(seed=9000)])
    assert wait_for_job(stack.api_url, job_id(warm), headers=stack.key.headers)["status"] == "succeeded"
    small = [[image_bytes(seed=9001 + i)] for i in range(SMALL_JOBS)]
    large = [image_bytes(640, 480, seed=9100 + i) for i in range(LARGE_JOB_IMAGES)]

    with redis_server.hung():
        hung_at = time.monotonic()
        # As many submissions at once as gunicorn has threads (2 processes x 4), and /healthz among them.
        with ThreadPoolExecutor(8) as pool:
            submissions = [pool.submit(submit, stack, images) for images in small]
            submissions.append(pool.submit(submit, stack, large, imgsz="1280"))
            probes = [healthz(stack) for _ in range(6)]
            answers = [future.result() for future in submissions]
        print(
            f"\nhung Redis: POST {max(a.seconds for a in answers):.2f} s at most "
            f"({sum(a.status is None for a in answers)} of {len(answers)} unanswered in {CLIENT_TIMEOUT} s), "
            f"/healthz {max(p.seconds for p in probes):.2f} s at most"
        )
        assert all(a.status == 202 and a.seconds < ANSWER_SECONDS for a in answers), answers
        assert all(p.status == 200 and p.seconds < HEALTHZ_SECONDS for p in probes), probes
        jobs = [job_id(answer) for answer in answers]
        deadline = hung_at + JOBS_END_SECONDS
        headers = stack.key.headers
        ends = [wait_for_job(stack.api_url, job, max(1, deadline - time.monotonic()), headers) for job in jobs]
        all_ended = time.monotonic() - hung_at
        checks = revoked_check_seconds(stack.worker)
        skipped = progress_skipped(stack.worker)

    print(
        f"{len(jobs)} jobs ended {all_ended:.1f} s after the hang; {len(checks)} revoked checks gave up after "
        f"{max(checks, default=0):.2f} s at most; {skipped} progress updates skipped"
    )
    assert [end["status"] for end in ends] == ["succeeded"] * len(jobs)
    assert checks, "every task's revoked check asked the hung Redis"
    assert max(checks) <= REVOKED_CHECK_SECONDS, checks
    assert skipped > 0, "the large job's progress updates were skipped, not waited for"

    # Redis answers again: so does everything on it.
    wait_until(lambda: _pings(redis_server.url), 10, what="Redis answering")
    after = submit(stack, [image_bytes(seed=9200)])
    assert after.seconds < ANSWER_SECONDS
    assert wait_for_job(stack.api_url, job_id(after), headers=stack.key.headers)["status"] == "succeeded"


def _sent_at(beat: ServiceProcess, entry: str) -> list[float]:
    """When beat sent ``entry``, as POSIX timestamps from its log."""
    sent = f"Scheduler: Sending due task {entry} "
    lines = beat.json_log_lines()
    return [datetime.fromisoformat(line["time"]).timestamp() for line in lines if sent in line["message"]]


def test_beat_keeps_sending_while_redis_hangs_or_is_down(
    stack: Stack, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Beat needs no Redis: the reaper goes out every second, whatever Redis does."""
    env = {**stack.env, "REAPER_INTERVAL_SECONDS": "1"}
    argv = [str(VENV_BIN / "celery"), "-A", "tasks", "beat", "--loglevel", "INFO", "-s", str(tmp_path / "schedule")]
    beat = ServiceProcess(argv, env, stack.logs / "beat.log").start()
    try:
        wait_until(lambda: _sent_at(beat, "reap-jobs"), 30, what="beat sending the reaper")
        faults_from = time.time()
        with redis_server.hung():
            time.sleep(5)
        with redis_server.down():
            time.sleep(5)
        faults_until = time.time()
        time.sleep(2)
    finally:
        beat.stop()
    window = (faults_from, faults_until + 1)
    sent = [at for at in _sent_at(beat, "reap-jobs") if window[0] <= at <= window[1]]
    gaps = [round(later - earlier, 2) for earlier, later in zip([window[0], *sent], [*sent, window[1]], strict=True)]
    problems = [line["message"] for line in beat.json_log_lines() if line["level"] in ("ERROR", "CRITICAL")]
    print(f"\nbeat while Redis hung, then down: {len(sent)} reaper sends in {window[1] - window[0]:.1f} s, gaps {gaps}")
    assert max(gaps) < 3, gaps
    assert not problems, problems

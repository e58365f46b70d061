"""Sustained images/s through gunicorn, RabbitMQ and the workers, against the bare Ultralytics predict loop.

The baseline is a plain ``YOLO(pt).predict`` loop over batches of 8 of the same images, in this
process, measured before and after the pipeline runs (the drift says how much the machine's other
load moved meanwhile). The pipeline runs 400 images as single-image jobs (four client threads),
the same as single-image jobs with rounds off (``WORKER_ROUND_JOBS=1``), and as eight-image jobs,
each through the real API and a worker at its default concurrency. A run lasts from the first POST
to the last job's ``finished_at``.

For each run it also reports what the processes spent: CPU milliseconds per image of the API
(gunicorn), of the worker, and of PostgreSQL, RabbitMQ and Redis (whole servers, so other work on
the machine counts too), and how busy the machine's cores were: what limits the pipeline.
Also counts model loads per worker process and measures task message sizes.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psutil
import requests
from kombu import Connection
from sqlalchemy import text

from bench.api_post import GENEROUS_QUOTAS
from bench.environment import BenchStack, bench_stack
from config import Settings
from config.paths import BUNDLED_MODEL
from config.ultralytics import configure_ultralytics
from harness.images import image_bytes
from harness.processes import ServiceProcess, start_api, start_worker, wait_until
from storage import Storage
from training.shapes import render_sample

IMAGES = 400
BATCH = 8
CLIENT_THREADS = 4
SEED = 5
SERVERS = {"postgres": "postgres", "rabbitmq": "beam.smp", "redis": "redis-server"}


def shapes_jpegs(count: int) -> list[bytes]:
    images = []
    for index in range(count):
        buffer = io.BytesIO()
        render_sample(SEED, index)[0].save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def bare_predict_loop(images: list[bytes]) -> float:
    """Images/s of decode + ``model.predict`` in batches of 8, in this process: the baseline."""
    configure_ultralytics(Settings.from_env().worker)
    import cv2
    import numpy as np
    from ultralytics import YOLO

    model = YOLO(str(BUNDLED_MODEL))
    model.predict([np.zeros((64, 64, 3), np.uint8)], verbose=False, device="cpu")  # warm-up
    started = time.perf_counter()
    for start in range(0, len(images), BATCH):
        batch = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in images[start : start + BATCH]]
        model.predict(batch, verbose=False, device="cpu")
    return len(images) / (time.perf_counter() - started)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def tree(service: ServiceProcess) -> list[psutil.Process]:
    root = psutil.Process(service.pid)
    return [root, *root.children(recursive=True)]


def servers() -> dict[str, list[psutil.Process]]:
    found: dict[str, list[psutil.Process]] = {name: [] for name in SERVERS}
    for process in psutil.process_iter(["name"]):
        for label, name in SERVERS.items():
            if process.info["name"] == name:
                found[label].append(process)
    return found


@contextmanager
def cpu_meter(api: ServiceProcess, worker: ServiceProcess) -> Iterator[dict[str, float]]:
    """CPU seconds spent by the API, the worker and the servers while the block runs, and the machine's busy share."""
    groups = {"api": tree(api), "worker": tree(worker), **servers()}
    before = {name: cpu_seconds(group) for name, group in groups.items()}
    machine = psutil.cpu_times()
    spent: dict[str, float] = {}
    yield spent
    for name, group in groups.items():
        spent[name] = cpu_seconds(group) - before[name]
    after = psutil.cpu_times()
    idle = (after.idle + after.iowait) - (machine.idle + machine.iowait)
    total = sum(after) - sum(machine)
    spent["machine busy"] = 1 - idle / total if total else 0.0


def post_all(stack: BenchStack, base_url: str, jobs: list[list[bytes]]) -> list[str]:
    """POST every job from ``CLIENT_THREADS`` threads, each with a session of its own; the job ids."""
    sessions = [requests.Session() for _ in range(CLIENT_THREADS)]

    def post(index: int) -> str:
        files = [("image", (f"{index}-{n}.jpg", data)) for n, data in enumerate(jobs[index])]
        response = sessions[index % CLIENT_THREADS].post(
            f"{base_url}/api/v1/jobs", files=files, headers=stack.auth, timeout=60
        )
        response.raise_for_status()
        return response.json()["job_id"]

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        return list(pool.map(post, range(len(jobs))))


def sustained(images: list[bytes], per_job: int, **overrides: str) -> dict[str, float]:
    """Images/s from the first POST to the last ``finished_at``, and CPU-ms per image of each part."""
    concurrency = len(os.sched_getaffinity(0))
    with bench_stack(INFERENCE_BATCH_SIZE=str(BATCH), **GENEROUS_QUOTAS, **overrides) as stack:
        worker = start_worker(stack.env, stack.workdir / "worker.log", queues="inference", concurrency=concurrency)
        server, base_url = start_api(stack.env, stack.workdir / "gunicorn.log")
        storage = Storage(stack.env["DATABASE_URL"], stack.workdir / "storage")
        try:
            post_all(stack, base_url, [images[:1]] * concurrency * 2)  # load the model in every process
            wait_until(lambda: finished(storage) == concurrency * 2, 120, what="warm-up jobs")
            jobs = [images[start : start + per_job] for start in range(0, len(images), per_job)]
            with cpu_meter(server, worker) as spent:
                started = time.time()
                post_all(stack, base_url, jobs)
                wait_until(lambda: finished(storage) == concurrency * 2 + len(jobs), 600, 0.2, "the jobs")
            with storage.database.transaction() as session:
                last = session.scalar(text("SELECT extract(epoch FROM max(finished_at)) FROM jobs"))
                failed = session.scalar(text("SELECT count(*) FROM jobs WHERE status <> 'succeeded'"))
            assert failed == 0, f"{failed} jobs did not succeed"
            loads = [x for x in worker.json_log_lines() if x["message"].startswith("model loaded")]
        finally:
            storage.dispose()
            server.stop()
            worker.stop()
    figures = {"images/s": len(images) / (float(last) - started), "model loads": float(len(loads))}
    figures |= {f"{name} CPU-ms per image": 1000 * spent[name] / len(images) for name in ("api", "worker")}
    figures |= {f"{name} CPU-ms per image": 1000 * spent[name] / len(images) for name in SERVERS}
    figures["machine busy share"] = spent["machine busy"]
    return figures


def finished(storage: Storage) -> int:
    with storage.database.transaction() as session:
        return session.scalar(text("SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL")) or 0


def message_sizes() -> tuple[int, int, int, int]:
    """Task message body bytes for a tiny and a large file (no worker consumes this vhost)."""
    small, large = image_bytes(16, 16, seed=1), image_bytes(3000, 2000, seed=2, fmt="BMP")
    sizes = []
    with bench_stack() as stack:
        server, base_url = start_api(stack.env, stack.workdir / "gunicorn.log")
        try:
            with Connection(stack.env["CELERY_BROKER_URL"]) as connection:
                channel = connection.channel()
                for data in (small, large):
                    requests.post(
                        f"{base_url}/api/v1/jobs", files=[("image", ("f", data))], headers=stack.auth, timeout=60
                    )
                    message = wait_until(lambda: channel.basic_get("inference", no_ack=True), 10)
                    body = message.body if isinstance(message.body, bytes) else message.body.encode()
                    json.loads(body)
                    sizes.append(len(body))
        finally:
            server.stop()
    return sizes[0], len(small), sizes[1], len(large)


def run() -> dict[str, float]:
    images = shapes_jpegs(IMAGES)
    bare_before = bare_predict_loop(images)
    runs = {
        "single-image jobs": sustained(images, 1),
        "single-image jobs, rounds off": sustained(images, 1, WORKER_ROUND_JOBS="1"),
        "eight-image jobs": sustained(images, BATCH),
    }
    bare_after = bare_predict_loop(images)
    baseline = (bare_before + bare_after) / 2
    figures = {
        "bare predict loop images/s, before": bare_before,
        "bare predict loop images/s, after": bare_after,
        "baseline drift (after / before)": bare_after / bare_before,
    }
    for name, measured in runs.items():
        figures[f"{name}: images/s"] = measured.pop("images/s")
        figures[f"{name}: / baseline"] = figures[f"{name}: images/s"] / baseline
        figures |= {f"{name}: {label}": value for label, value in measured.items()}
    small_body, small_file, large_body, large_file = message_sizes()
    figures |= {
        f"message bytes, {small_file} B file": small_body,
        f"message bytes, {large_file / 1e6:.0f} MB file": large_body,
        "message bytes large file / small file": large_body / small_body,
    }
    return figures

"""Sustained images/s through gunicorn, RabbitMQ and the workers, against two baselines measured in the same run.

- **The backend alone** (the efficiency's denominator): the worker's own backend (the bundled model's
  OpenVINO export, as a CPU worker loads it) in as many processes as the worker runs, each with the
  worker's threads, decoding and predicting the same images in batches of 8, side by side.
- **The bare Ultralytics loop**: a plain ``YOLO(pt).predict`` over batches of 8 of the same images, in
  this process, measured before and after the pipeline runs (the drift says how much the machine's
  other load moved meanwhile).

The pipeline runs 400 images as single-image jobs (four client threads), the same with rounds off
(``WORKER_ROUND_JOBS=1``), and as eight-image jobs, each through the real API and a worker at its
default concurrency. A run lasts from the first POST to the last job's ``finished_at``.

For each run it also reports what the processes spent: CPU milliseconds per image of the API
(gunicorn), of the worker and of its pipeline's stages (the worker's ``round finished`` lines), and of
PostgreSQL, RabbitMQ and Redis (whole servers, so other work on the machine counts too); how busy the
machine's cores were, in all and while jobs waited in the queue; and the peak RSS of a worker process
against its size after the warm-up, with the most jobs seen waiting. Also counts model loads per
worker process and measures task message sizes.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil
import requests
from kombu import Connection
from sqlalchemy import text
from urllib3 import encode_multipart_formdata

from bench.api_post import GENEROUS_QUOTAS
from bench.environment import BenchStack, bench_stack
from config import Settings
from config.paths import BUNDLED_MODEL
from config.ultralytics import configure_ultralytics
from harness.images import image_bytes
from harness.processes import ServiceProcess, start_api, start_worker, wait_until
from harness.side_by_side import side_by_side
from inference.backends import choose, load
from storage import Storage
from tasks.runtime import threads_per_process
from training.shapes import render_sample

IMAGES = 400
BATCH = 8
CLIENT_THREADS = 4
SEED = 5
# How often the sampler reads the cores, the queue and the workers' memory.
SAMPLE_SECONDS = 0.25
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


def _backend_share(images: list[bytes], threads: int) -> Callable[[], tuple[float, float]]:
    """One process of :func:`backend_alone`: load and warm up; then decode and predict its share, timed."""
    import cv2
    import numpy as np

    from jobs.lifecycle import JobParams

    detector = load(choose(str(BUNDLED_MODEL), "cpu"), "cpu", threads)
    params = JobParams(model="shapes")

    def batch_of(chunk: list[bytes]) -> list[Any]:
        return [cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) for data in chunk]

    detector.predict(batch_of(images[:BATCH]), params)

    def work() -> tuple[float, float]:
        started = time.time()
        for start in range(0, len(images), BATCH):
            detector.predict(batch_of(images[start : start + BATCH]), params)
        return started, time.time()

    return work


def backend_alone(images: list[bytes], processes: int) -> float:
    """Images/s of the worker's backend alone, in the worker's set-up: ``processes`` processes of its threads."""
    configure_ultralytics(Settings.from_env().worker)  # the processes inherit its environment
    threads = threads_per_process(processes)
    spans = side_by_side(_backend_share, [(images[index::processes], threads) for index in range(processes)])
    return len(images) / (max(end for _, end in spans) - min(start for start, _ in spans))


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
    groups = {"api": tree(api), "worker": tree(worker), "client": [psutil.Process()], **servers()}
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


@dataclass
class Samples:
    """What the sampler saw: machine CPU times, jobs waiting, and each worker process's RSS."""

    busy_while_waiting: list[tuple[float, float]] = field(default_factory=list)  # (busy, total) seconds
    most_waiting: int = 0
    peak_rss: int = 0


@contextmanager
def sampler(worker: ServiceProcess, storage: Storage) -> Iterator[Samples]:
    """Sample every :data:`SAMPLE_SECONDS` while the block runs, in a thread."""
    samples, stop = Samples(), threading.Event()
    children = psutil.Process(worker.pid).children(recursive=True)

    def waiting() -> int:
        with storage.database.transaction() as session:
            return session.scalar(text("SELECT count(*) FROM jobs WHERE status = 'queued'")) or 0

    def run() -> None:
        before, waited = psutil.cpu_times(), waiting()
        while not stop.wait(SAMPLE_SECONDS):
            now, waits = psutil.cpu_times(), waiting()
            samples.most_waiting = max(samples.most_waiting, waits)
            for child in children:
                try:
                    samples.peak_rss = max(samples.peak_rss, child.memory_info().rss)
                except psutil.NoSuchProcess:
                    continue
            if waited and waits:
                idle = (now.idle + now.iowait) - (before.idle + before.iowait)
                total = sum(now) - sum(before)
                samples.busy_while_waiting.append((total - idle, total))
            before, waited = now, waits

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def stage_seconds(worker: ServiceProcess) -> dict[str, float]:
    """The pipeline's stages summed over the worker's ``round finished`` lines."""
    totals = {"decode_cpu_seconds": 0.0, "predict_seconds": 0.0, "write_cpu_seconds": 0.0}
    for line in worker.json_log_lines():
        if line["message"].startswith("round finished"):
            fields = dict(part.split("=", 1) for part in line["message"].split()[2:])
            for name in totals:
                totals[name] += float(fields[name])
    return totals


def encoded(jobs: list[list[bytes]]) -> list[tuple[bytes, str]]:
    """Each job's multipart body and its content type, made before a run: the client is not the system."""
    return [
        encode_multipart_formdata([("image", (f"{index}-{n}.jpg", data)) for n, data in enumerate(job)])
        for index, job in enumerate(jobs)
    ]


def post_all(stack: BenchStack, base_url: str, bodies: list[tuple[bytes, str]]) -> list[str]:
    """POST every job from ``CLIENT_THREADS`` threads, each with a session of its own; the job ids."""
    sessions = [requests.Session() for _ in range(CLIENT_THREADS)]

    def post(index: int) -> str:
        body, content_type = bodies[index]
        headers = {**stack.auth, "Content-Type": content_type}
        response = sessions[index % CLIENT_THREADS].post(
            f"{base_url}/api/v1/jobs", data=body, headers=headers, timeout=60
        )
        response.raise_for_status()
        return response.json()["job_id"]

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        return list(pool.map(post, range(len(bodies))))


def sustained(images: list[bytes], per_job: int, **overrides: str) -> dict[str, float]:
    """Images/s from the first POST to the last ``finished_at``, and CPU-ms per image of each part."""
    concurrency = len(os.sched_getaffinity(0))  # the worker's own default: a process per core
    with bench_stack(INFERENCE_BATCH_SIZE=str(BATCH), **GENEROUS_QUOTAS, **overrides) as stack:
        worker = start_worker(stack.env, stack.workdir / "worker.log", queues="inference", concurrency=concurrency)
        server, base_url = start_api(stack.env, stack.workdir / "gunicorn.log")
        storage = Storage(stack.env["DATABASE_URL"], stack.workdir / "storage")
        try:
            post_all(stack, base_url, encoded([images[:1]] * concurrency * 2))  # load the model in every process
            wait_until(lambda: finished(storage) == concurrency * 2, 120, what="warm-up jobs")
            warm_rss = max(child.memory_info().rss for child in psutil.Process(worker.pid).children(recursive=True))
            stages_before = stage_seconds(worker)
            jobs = encoded([images[start : start + per_job] for start in range(0, len(images), per_job)])
            with cpu_meter(server, worker) as spent, sampler(worker, storage) as samples:
                started = time.time()
                post_all(stack, base_url, jobs)
                wait_until(lambda: finished(storage) == concurrency * 2 + len(jobs), 600, 0.2, "the jobs")
            stages = {name: value - stages_before[name] for name, value in stage_seconds(worker).items()}
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
    figures |= {f"{name} CPU-ms per image": 1000 * spent[name] / len(images) for name in ("api", "worker", "client")}
    figures |= {f"{name} CPU-ms per image": 1000 * spent[name] / len(images) for name in SERVERS}
    figures |= {f"worker {name[:-8]} ms per image": 1000 * value / len(images) for name, value in stages.items()}
    figures["machine busy share"] = spent["machine busy"]
    busy = sum(b for b, _ in samples.busy_while_waiting)
    total = sum(t for _, t in samples.busy_while_waiting)
    figures["machine busy share while jobs waited"] = busy / total if total else 0.0
    figures["most jobs waiting"] = float(samples.most_waiting)
    figures["worker process peak RSS MB"] = samples.peak_rss / 1e6
    figures["worker peak RSS / after warm-up"] = samples.peak_rss / warm_rss
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
    alone = backend_alone(images, len(os.sched_getaffinity(0)))
    bare_before = bare_predict_loop(images)
    runs = {
        "single-image jobs": sustained(images, 1),
        "single-image jobs, rounds off": sustained(images, 1, WORKER_ROUND_JOBS="1"),
        "eight-image jobs": sustained(images, BATCH),
    }
    bare_after = bare_predict_loop(images)
    baseline = (bare_before + bare_after) / 2
    figures = {
        "backend alone images/s (worker's processes and threads, batch 8)": alone,
        "bare predict loop images/s, before": bare_before,
        "bare predict loop images/s, after": bare_after,
        "baseline drift (after / before)": bare_after / bare_before,
    }
    for name, measured in runs.items():
        figures[f"{name}: images/s"] = measured.pop("images/s")
        figures[f"{name}: efficiency (/ backend alone)"] = figures[f"{name}: images/s"] / alone
        figures[f"{name}: / baseline"] = figures[f"{name}: images/s"] / baseline
        figures |= {f"{name}: {label}": value for label, value in measured.items()}
    small_body, small_file, large_body, large_file = message_sizes()
    figures |= {
        f"message bytes, {small_file} B file": small_body,
        f"message bytes, {large_file / 1e6:.0f} MB file": large_body,
        "message bytes large file / small file": large_body / small_body,
    }
    return figures

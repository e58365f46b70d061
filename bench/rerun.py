"""A rerun of a 100-image job with results reused (``RESULT_REUSE=tenant``, the default) against its first run.

- **First run**: 100 shape images (``bench.pipeline``'s) in one POST, from the POST to the job's
  ``finished_at``, on a worker of two processes whose model a warm-up job has already loaded.
- **Rerun, reuse on**: ``POST /api/v1/jobs/<id>/rerun`` with the same model and parameters, from
  the POST to the new job's ``finished_at``. Every file's result must come back ``cached`` and
  equal to the first run's.
- **Rerun, reuse off** (the baseline measured in the same run): the same rerun on a worker started
  with ``RESULT_REUSE=off``, model loaded as well: inference again, no upload. It tells what reuse
  saves apart from the upload a rerun skips anyway.

Each run's time in the worker (``started_at`` to ``finished_at``) is reported beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import requests

from bench.api_post import GENEROUS_QUOTAS
from bench.environment import BenchStack, bench_stack
from bench.pipeline import shapes_jpegs
from harness.images import image_bytes
from harness.processes import ServiceProcess, start_api, start_worker, wait_for_job

IMAGES = 100
WORKER_PROCESSES = 2


def submit(stack: BenchStack, base_url: str, images: list[bytes]) -> str:
    files = [("image", (f"{index:03}.jpg", data)) for index, data in enumerate(images)]
    response = requests.post(f"{base_url}/api/v1/jobs", files=files, headers=stack.auth, timeout=120)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def rerun(stack: BenchStack, base_url: str, job: dict[str, Any]) -> str:
    """Rerun ``job`` with its own model and parameters."""
    same = {name: value for name, value in job["parameters"].items() if value is not None}
    response = requests.post(f"{base_url}/api/v1/jobs/{job['job_id']}/rerun", json=same, headers=stack.auth, timeout=60)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def timed(stack: BenchStack, base_url: str, post: Callable[[], str]) -> tuple[float, dict[str, Any]]:
    """Seconds from the POST to the job's ``finished_at``, and the finished job (which must have succeeded)."""
    started = time.time()
    job = wait_for_job(base_url, post(), 900, stack.auth)
    assert job["status"] == "succeeded", job
    return datetime.fromisoformat(job["finished_at"]).timestamp() - started, job


def in_worker(job: dict[str, Any]) -> float:
    return (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds()


def cached(job: dict[str, Any]) -> int:
    return sum(1 for result in job["results"] if result["cached"])


def detections(job: dict[str, Any]) -> dict[str, Any]:
    return {result["filename"]: result["detections"] for result in job["results"]}


def warm_worker(stack: BenchStack, base_url: str, **overrides: str) -> ServiceProcess:
    """A worker of :data:`WORKER_PROCESSES` processes, each having loaded the model (an image none of the runs has)."""
    worker = start_worker({**stack.env, **overrides}, stack.workdir / "worker.log", "inference", WORKER_PROCESSES)
    warm_ups = [submit(stack, base_url, [image_bytes(seed=index, fmt="JPEG")]) for index in range(WORKER_PROCESSES * 2)]
    for job_id in warm_ups:
        wait_for_job(base_url, job_id, 300, stack.auth)
    return worker


def run() -> dict[str, float]:
    images = shapes_jpegs(IMAGES)
    with bench_stack(**GENEROUS_QUOTAS) as stack:
        server, base_url = start_api(stack.env, stack.workdir / "gunicorn.log")
        try:
            worker = warm_worker(stack, base_url)
            try:
                first_seconds, first = timed(stack, base_url, lambda: submit(stack, base_url, images))
                reused_seconds, reused = timed(stack, base_url, lambda: rerun(stack, base_url, first))
            finally:
                worker.stop()
            worker = warm_worker(stack, base_url, RESULT_REUSE="off")
            try:
                inferred_seconds, inferred = timed(stack, base_url, lambda: rerun(stack, base_url, first))
            finally:
                worker.stop()
        finally:
            server.stop()
    assert len(first["results"]) == IMAGES and cached(first) == 0, "the first run reused results it cannot have had"
    assert cached(reused) == IMAGES, f"{cached(reused)} of {IMAGES} results reused on the rerun"
    assert cached(inferred) == 0, "RESULT_REUSE=off reused results"
    assert detections(reused) == detections(first), "a reused result differs from the one it reused"
    return {
        f"first run s ({IMAGES} images, POST to finished_at)": first_seconds,
        "rerun, reuse on s (POST to finished_at)": reused_seconds,
        "rerun, reuse off s (POST to finished_at; baseline)": inferred_seconds,
        "first run / rerun with reuse (goal >= 10)": first_seconds / reused_seconds,
        "rerun without reuse / rerun with reuse": inferred_seconds / reused_seconds,
        "first run in the worker s (started_at to finished_at)": in_worker(first),
        "rerun, reuse on, in the worker s": in_worker(reused),
        "rerun, reuse off, in the worker s": in_worker(inferred),
        "results cached on the rerun with reuse": float(cached(reused)),
    }

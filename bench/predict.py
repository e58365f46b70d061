"""``POST /api/v1/predict`` latency, one request at a time on a quiet stack, against one ``model.predict`` call.

- **Predict**: :data:`REQUESTS` predictions in a row of the same shapes JPEG, through nginx, gunicorn,
  RabbitMQ and a worker of one process (all the cores' threads, as one request at a time wants), its model
  loaded by a warm-up. ``RESULT_REUSE=off``: every request runs inference, none takes the last one's result.
  Each is timed from the request sent to the answer read.
- **The baseline**: the bare Ultralytics ``model.predict`` of the same bundled model on the same image
  (decoded from its bytes each time, as a worker decodes it), in this process on as many threads, measured
  before and after the predictions (the drift says how much the machine's other load moved meanwhile).
- **The worker's backend alone** (the bundled model's OpenVINO export, as a CPU worker loads it): what the
  job itself spends on inference, so that the rest of a prediction's time is the facade's and the job's.

Where a prediction's time goes, from its job's own timestamps (p50 of each): the request sent to its job
created (the upload, the checks), the job created to the worker's start (the commit, the task sent and
taken), the worker's start to the job's end, and the job's end to the answer read (the wait's granularity,
the answer). Also the API's CPU per prediction against the same POST without a wait (``timeout=0``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
from sqlalchemy import select

from bench.api_post import GENEROUS_QUOTAS
from bench.environment import BenchStack, bench_stack, proxied_api
from bench.pipeline import cpu_seconds, shapes_jpegs, tree
from config import Settings
from config.paths import BUNDLED_MODEL
from config.ultralytics import configure_ultralytics
from harness.processes import ServiceProcess, start_worker, wait_for_job
from inference.backends import choose, load
from storage import Storage
from storage.tables import Job
from tasks.runtime import threads_per_process

T = TypeVar("T")
REQUESTS = 200
# The proxy's own rate limit per address (20 a second) would refuse the POSTs of the CPU measurement.
PROXY_LIMITS = {"PROXY_REQUESTS_PER_SECOND": "100000"}
WARM_UPS = 5
WORKER_PROCESSES = 1


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile of ``values`` (0.5: the median), interpolated between the nearest two."""
    return statistics.quantiles(values, n=1000, method="inclusive")[round(share * 1000) - 1]


def timed_calls(call: Callable[[], Any], count: int) -> list[float]:
    """Milliseconds of each of ``count`` calls in a row."""
    spans = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        spans.append((time.perf_counter() - started) * 1000)
    return spans


def bare_predict(image: bytes) -> Callable[[], Any]:
    """One decode and ``model.predict`` of ``image`` by the bare Ultralytics model, on the worker's threads."""
    configure_ultralytics(Settings.from_env().worker)
    import cv2
    import numpy as np
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(threads_per_process(WORKER_PROCESSES))  # Ultralytics' import sets OMP_NUM_THREADS=1
    model = YOLO(str(BUNDLED_MODEL))
    model.predict([np.zeros((64, 64, 3), np.uint8)], verbose=False, device="cpu")  # warm-up
    return lambda: model.predict(
        cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR), verbose=False, device="cpu"
    )


def backend_predict(image: bytes) -> Callable[[], Any]:
    """One decode and predict of ``image`` by the worker's own backend, on its threads."""
    import cv2
    import numpy as np

    from jobs.lifecycle import JobParams

    detector = load(choose(str(BUNDLED_MODEL), "cpu"), "cpu", threads_per_process(WORKER_PROCESSES))
    params = JobParams(model="shapes")

    def call() -> Any:
        return detector.predict([cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)], params)

    call()  # warm-up
    return call


def post_predict(stack: BenchStack, url: str, image: bytes, **form: str) -> requests.Response:
    files = {"file": ("shapes.jpg", image, "application/octet-stream")}
    return requests.post(f"{url}/api/v1/predict", files=files, data=form, headers=stack.auth, timeout=60)


# A prediction's job, with when its request was sent and its answer read (Unix time).
Answered = tuple[str, float, float]
PHASES = (Job.created_at, Job.started_at, Job.finished_at)


def predictions(stack: BenchStack, url: str, image: bytes) -> tuple[list[float], list[Answered]]:
    """Milliseconds of each of :data:`REQUESTS` predictions, and each one's job with when it was sent and read."""
    spans, answered = [], []
    for _ in range(REQUESTS):
        sent, started = time.time(), time.perf_counter()
        response = post_predict(stack, url, image)
        spans.append((time.perf_counter() - started) * 1000)
        answered.append((response.json()["job_id"], sent, time.time()))
        assert response.status_code == 200 and response.json()["detections"], response.text
    return spans, answered


def stages(stack: BenchStack, answered: list[Answered]) -> dict[str, float]:
    """The p50 of each stage of a prediction, in milliseconds, from its job's timestamps (read in the database:
    no request of the measurement's own)."""
    storage = Storage(stack.env["DATABASE_URL"], Path(stack.env["STORAGE_ROOT"]))
    try:
        with storage.database.transaction() as session:
            rows = session.execute(select(Job.id, *PHASES).where(Job.id.in_([job_id for job_id, _, _ in answered])))
            phases = {str(job_id): [at.timestamp() for at in times] for job_id, *times in rows}
    finally:
        storage.dispose()
    waits: dict[str, list[float]] = {"submitted": [], "queued": [], "running": [], "answer": []}
    for job_id, sent, read in answered:
        created, started, finished = phases[job_id]
        waits["submitted"].append((created - sent) * 1000)
        waits["queued"].append((started - created) * 1000)
        waits["running"].append((finished - started) * 1000)
        waits["answer"].append((read - finished) * 1000)
    return {name: statistics.median(values) for name, values in waits.items()}


def api_cpu_ms(gunicorn: ServiceProcess, work: Callable[[], T]) -> tuple[float, T]:
    """The API's CPU milliseconds per request over ``work`` (:data:`REQUESTS` requests), and what it returned."""
    processes = tree(gunicorn)
    before = cpu_seconds(processes)
    done = work()
    return (cpu_seconds(processes) - before) * 1000 / REQUESTS, done


def submissions(stack: BenchStack, url: str, image: bytes) -> list[str]:
    """:data:`REQUESTS` predictions with ``timeout=0`` (answered at once, as POST /jobs): their jobs' ids."""
    job_ids = []
    for _ in range(REQUESTS):
        response = post_predict(stack, url, image, timeout="0")
        assert response.status_code == 202, response.text
        job_ids.append(response.json()["job_id"])
    return job_ids


def run() -> dict[str, float]:
    image = shapes_jpegs(1)[0]
    bare = bare_predict(image)
    bare_before = timed_calls(bare, REQUESTS)
    with bench_stack(**GENEROUS_QUOTAS, RESULT_REUSE="off") as stack, proxied_api(stack, **PROXY_LIMITS) as api:
        worker = start_worker(stack.env, stack.workdir / "worker.log", "inference", WORKER_PROCESSES)
        try:
            for _ in range(WARM_UPS):
                assert post_predict(stack, api.url, image).status_code == 200
            waiting_cpu, (predicted, answered) = api_cpu_ms(api.gunicorn, lambda: predictions(stack, api.url, image))
            breakdown = stages(stack, answered)
            posting_cpu, job_ids = api_cpu_ms(api.gunicorn, lambda: submissions(stack, api.url, image))
            for job_id in job_ids:  # they ended, as the predictions' jobs did
                assert wait_for_job(api.url, job_id, 120, stack.auth)["status"] == "succeeded"
        finally:
            worker.stop()
    bare_after = timed_calls(bare, REQUESTS)
    backend = timed_calls(backend_predict(image), REQUESTS)
    baseline = bare_before + bare_after
    return {
        "POST /predict p50 ms": percentile(predicted, 0.5),
        "POST /predict p99 ms": percentile(predicted, 0.99),
        "model.predict p50 ms (baseline: decode + bare Ultralytics predict)": percentile(baseline, 0.5),
        "model.predict p99 ms (baseline)": percentile(baseline, 0.99),
        "  baseline p50 before ms": percentile(bare_before, 0.5),
        "  baseline p50 after ms": percentile(bare_after, 0.5),
        "POST /predict / model.predict, p50": percentile(predicted, 0.5) / percentile(baseline, 0.5),
        "POST /predict / model.predict, p99": percentile(predicted, 0.99) / percentile(baseline, 0.99),
        "worker's backend alone p50 ms (decode + OpenVINO predict)": percentile(backend, 0.5),
        "p50 ms: the request sent to its job created": breakdown["submitted"],
        "p50 ms: the job created to the worker's start": breakdown["queued"],
        "p50 ms: the worker's start to the job's end": breakdown["running"],
        "p50 ms: the job's end to the answer read (the wait's granularity, the answer)": breakdown["answer"],
        "API CPU ms per prediction": waiting_cpu,
        "API CPU ms per prediction with timeout=0 (no wait)": posting_cpu,
    }

"""End-to-end images/s through gunicorn, RabbitMQ and a worker, against the bare Ultralytics predict loop.

Also counts model loads per worker process and measures task message sizes.
"""

from __future__ import annotations

import io
import json
import time

import requests
from kombu import Connection

from bench.environment import bench_stack
from config import Settings
from config.paths import BUNDLED_MODEL
from config.ultralytics import configure_ultralytics
from harness.images import image_bytes
from harness.processes import start_api, start_worker, wait_for_job, wait_until
from training.shapes import render_sample

IMAGES = 48
BATCH = 8
SEED = 5


def shapes_png(count: int) -> list[bytes]:
    images = []
    for index in range(count):
        buffer = io.BytesIO()
        render_sample(SEED, index)[0].save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def bare_predict_loop(images: list[bytes]) -> float:
    """Images/s of decode + ``model.predict`` in batches, in this process: the floor under any pipeline."""
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


def end_to_end(images: list[bytes]) -> tuple[float, int, int, int]:
    """Images/s from the first POST to the last job finished; and model loads, worker processes, jobs."""
    with bench_stack(INFERENCE_BATCH_SIZE=str(BATCH)) as stack:
        worker = start_worker(stack.env, stack.workdir / "worker.log", queues="inference", concurrency=1)
        server, base_url = start_api(stack.env, stack.workdir / "gunicorn.log")
        try:
            warm = requests.post(
                f"{base_url}/api/v1/jobs", files=[("image", ("w.png", images[0]))], headers=stack.auth, timeout=30
            )
            wait_for_job(base_url, warm.json()["job_id"], timeout=120, headers=stack.auth)
            started = time.perf_counter()
            job_ids = []
            for start in range(0, len(images), BATCH):
                files = [("image", (f"{i}.png", b)) for i, b in enumerate(images[start : start + BATCH], start)]
                job_ids.append(
                    requests.post(f"{base_url}/api/v1/jobs", files=files, headers=stack.auth, timeout=30).json()[
                        "job_id"
                    ]
                )
            for job_id in job_ids:
                assert wait_for_job(base_url, job_id, timeout=600, headers=stack.auth)["status"] == "succeeded"
            rate = len(images) / (time.perf_counter() - started)
            loads = [x for x in worker.json_log_lines() if x["message"].startswith("model loaded")]
            pids = {x["pid"] for x in worker.json_log_lines() if x["message"].startswith("job started")}
        finally:
            server.stop()
            worker.stop()
    return rate, len(loads), len(pids), len(job_ids) + 1


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
    images = shapes_png(IMAGES)
    bare = bare_predict_loop(images)
    e2e, loads, processes, jobs = end_to_end(images)
    small_body, small_file, large_body, large_file = message_sizes()
    return {
        "bare predict loop images/s (baseline)": bare,
        "end-to-end images/s": e2e,
        "end-to-end / bare loop": e2e / bare,
        "model loads per worker process": loads / max(processes, 1),
        "model loads per job": loads / jobs,
        f"message bytes, {small_file} B file": small_body,
        f"message bytes, {large_file / 1e6:.0f} MB file": large_body,
        "message bytes large file / small file": large_body / small_body,
    }

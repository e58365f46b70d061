"""The ``yolo-jobs`` command end to end: ``submit DIR --export coco`` of 500 shape images (five jobs) through
gunicorn, RabbitMQ and a worker of two processes, against the bare Ultralytics predict loop in this process.

``python -m bench bench.cli``; the wall time runs from the command's start (reading the folder, uploads,
waiting) to the merged COCO file written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bench.environment import bench_stack
from bench.pipeline import bare_predict_loop, shapes_jpegs
from config.paths import PROJECT_ROOT
from harness.processes import start_api, start_worker

IMAGES = 500


def run() -> dict[str, float]:
    images = shapes_jpegs(IMAGES)
    bare = bare_predict_loop(images[:48])
    with bench_stack() as stack:
        folder = stack.workdir / "images"
        folder.mkdir()
        for index, data in enumerate(images):
            (folder / f"{index:04}.jpg").write_bytes(data)
        worker = start_worker(stack.env, stack.workdir / "worker.log", queues="inference", concurrency=2)
        server, base_url = start_api(stack.env, stack.workdir / "gunicorn.log")
        out = stack.workdir / "all.json"
        env = {**stack.env, "YOLO_JOBS_URL": base_url, "YOLO_JOBS_API_KEY": stack.key}
        try:
            started = time.perf_counter()
            argv = [
                sys.executable,
                "-m",
                "yolo_jobs_client",
                "submit",
                str(folder),
                "--export",
                "coco",
                "--out",
                str(out),
            ]
            subprocess.run(argv, env=env, cwd=PROJECT_ROOT, check=True, stdout=subprocess.DEVNULL, timeout=1800)
            wall = time.perf_counter() - started
        finally:
            server.stop()
            worker.stop()
        assert len(json.loads(out.read_bytes())["images"]) == IMAGES
    return {
        "bare predict loop images/s (baseline)": bare,
        f"CLI wall time, {IMAGES} images (s)": wall,
        "CLI images/s": IMAGES / wall,
        "CLI / bare loop": IMAGES / wall / bare,
    }

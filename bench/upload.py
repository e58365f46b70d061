"""Upload throughput and memory: a large image through gunicorn against ``sha256sum`` + ``cp`` of the same file."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import requests
from PIL import Image

from bench.environment import bench_stack
from harness.processes import start_api

SIDE = 8000  # an 8000x8000 RGB BMP: 192 MB


def make_big_image(path: Path) -> int:
    Image.new("RGB", (SIDE, SIDE), (30, 120, 200)).save(path, format="BMP")
    return path.stat().st_size


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def gunicorn_workers(master_pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()]


def run() -> dict[str, float]:
    with bench_stack(MAX_UPLOAD_BYTES=str(1 << 30)) as stack:
        image = stack.workdir / "big.bmp"
        size = make_big_image(image)

        started = time.perf_counter()
        subprocess.run(["sha256sum", str(image)], check=True, capture_output=True)
        subprocess.run(["cp", str(image), str(stack.workdir / "copy.bmp")], check=True)
        subprocess.run(["sync"], check=True)
        baseline = time.perf_counter() - started

        server, base_url = start_api({**stack.env, "WEB_CONCURRENCY": "1"}, stack.workdir / "gunicorn.log")
        try:
            (worker_pid,) = gunicorn_workers(server.pid)
            requests.get(f"{base_url}/readyz", timeout=10)
            rss_before = peak_rss_kib(worker_pid)
            started = time.perf_counter()
            with open(image, "rb") as handle:
                response = requests.post(
                    f"{base_url}/api/v1/jobs", files={"image": ("big.bmp", handle)}, headers=stack.auth, timeout=600
                )
            upload = time.perf_counter() - started
            assert response.status_code in (202, 503), response.text  # no worker runs here: enqueueing still works
            rss_growth = (peak_rss_kib(worker_pid) - rss_before) * 1024
        finally:
            server.stop()
    mb = size / 1e6
    return {
        "file MB": mb,
        "sha256sum+cp MB/s (baseline)": mb / baseline,
        "upload MB/s": mb / upload,
        "upload speed / baseline": baseline / upload,
        "API peak memory growth MB": rss_growth / 1e6,
        "API memory growth / file size": rss_growth / size,
    }

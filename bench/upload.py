"""Upload throughput and memory: a large image through gunicorn against ``sha256sum`` + ``cp`` of the same file.

The machine is shared, so the baseline and the upload alternate for a few rounds
in one run and the best of each is compared. Each round's image has new content
(a repeated one would be deduplicated, skipping the write and the fsync), and
its multipart body is built before the clock starts: encoding 192 MB is the
client's work, not the API's, and would otherwise compete for the same cores.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import requests
from PIL import Image
from urllib3 import encode_multipart_formdata

from bench.environment import BenchStack, bench_stack
from harness.processes import start_api

SIDE = 8000  # an 8000x8000 RGB BMP: 192 MB
ROUNDS = 3


def make_big_image(path: Path, shade: int = 0) -> int:
    Image.new("RGB", (SIDE, SIDE), (30 + shade, 120, 200)).save(path, format="BMP")
    return path.stat().st_size


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def gunicorn_workers(master_pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()]


def baseline_seconds(image: Path, workdir: Path) -> float:
    """``sha256sum``, ``cp`` and ``sync`` (an fsync) of the copy: what storing it durably costs at the least."""
    copy = workdir / "copy.bmp"
    started = time.perf_counter()
    subprocess.run(["sha256sum", str(image)], check=True, capture_output=True)
    subprocess.run(["cp", str(image), str(copy)], check=True)
    subprocess.run(["sync", str(copy)], check=True)  # fsync of the copy alone, as the API does for its file
    elapsed = time.perf_counter() - started
    copy.unlink()
    return elapsed


def upload_seconds(base_url: str, stack: BenchStack, image: Path) -> float:
    body, content_type = encode_multipart_formdata({"image": (image.name, image.read_bytes())})
    headers = {**stack.auth, "Content-Type": content_type}
    started = time.perf_counter()
    response = requests.post(f"{base_url}/api/v1/jobs", data=body, headers=headers, timeout=600)
    elapsed = time.perf_counter() - started
    assert response.status_code in (202, 503), response.text  # no worker runs here: enqueueing still works
    return elapsed


def run() -> dict[str, float]:
    with bench_stack(MAX_UPLOAD_BYTES=str(1 << 30)) as stack:
        server, base_url = start_api({**stack.env, "WEB_CONCURRENCY": "1"}, stack.workdir / "gunicorn.log")
        baselines, uploads = [], []
        try:
            (worker_pid,) = gunicorn_workers(server.pid)
            requests.get(f"{base_url}/readyz", timeout=10)
            rss_before = peak_rss_kib(worker_pid)
            for shade in range(ROUNDS):
                image = stack.workdir / f"big-{shade}.bmp"
                size = make_big_image(image, shade)
                baselines.append(baseline_seconds(image, stack.workdir))
                uploads.append(upload_seconds(base_url, stack, image))
                image.unlink()
            rss_growth = (peak_rss_kib(worker_pid) - rss_before) * 1024
        finally:
            server.stop()
    mb = size / 1e6
    return {
        "file MB": mb,
        "sha256sum+cp MB/s (baseline, best)": mb / min(baselines),
        "upload MB/s (best)": mb / min(uploads),
        "upload speed / baseline (best of each)": min(baselines) / min(uploads),
        "upload speed / baseline (median of rounds)": sorted(b / u for b, u in zip(baselines, uploads, strict=True))[
            ROUNDS // 2
        ],
        "API peak memory growth MB": rss_growth / 1e6,
        "API memory growth / file size": rss_growth / size,
    }

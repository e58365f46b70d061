"""A 2 GiB file through tus (tuspy, 64 MiB PATCHes, nginx and gunicorn) against ``sha256sum`` + ``cp``, and a resume.

- **Throughput**: MB/s of the upload, from its POST to the PATCH that finishes it (the stored file
  made), against ``sha256sum``, ``cp`` and ``sync`` of the same file (``bench.upload``'s baseline),
  alternating for five rounds: each round's ratio, their median, and the best of each. The file
  is made once, on the storage root's filesystem: a small PNG followed by pseudo-random bytes (the
  API stores only images and videos, known by their header); each round changes its last bytes, so every
  upload is new content (a known SHA-256 would skip the blob's write) while both sides read it
  from the page cache. Each round's stored file leaves the page cache once checked, as the
  baseline's copy does when it is removed, so every round of either side starts from the same
  page cache: the source's pages, and memory given back.
- **Memory**: the gunicorn workers' RSS, summed, sampled during each upload, peak minus idle (after
  a small upload warmed them up); and their high-water marks (``VmHWM``), which no sampling misses.
- **Resume**: a tuspy client in a process of its own is SIGKILLed (its process group) in the
  middle of a piece's body, once the server has written half the file and half a piece (32 MiB)
  more; a new client resumes from the URL its store kept, at the server's ``Upload-Offset``. What
  it sends is counted (its start offset, and its PATCH bodies); the stored blob's SHA-256, read
  back from the volume, must be the source's.

``BENCH_RESUMABLE_MIB`` sets a smaller file for a quick check (the entry's ``file MiB`` says which).
The run's folder holds the source, and each round's stored file until the end: about 14 GiB at 2 GiB.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import requests

from bench.environment import BenchStack, ProxiedApi, bench_stack, proxied_api
from bench.tus_client import CHUNK_BYTES, TUS_HEADERS, Sent, send, uploader
from bench.upload import baseline_seconds, gunicorn_workers, peak_rss_kib
from config.paths import PROJECT_ROOT
from harness.images import image_bytes
from harness.processes import wait_until
from storage.blobs import blob_relpath, file_sha256
from storage.parts import part_relpath

MIB = 1024 * 1024
FILE_BYTES = int(os.environ.get("BENCH_RESUMABLE_MIB", "2048")) * MIB
WARM_UP_BYTES = 4 * MIB
# Rounds of baseline then upload: the machine's disk is shared, and its speed varies from one to the next.
ROUNDS = 5
UPLOADS = "/api/v1/uploads"
SAMPLE_SECONDS = 0.02
# How often the resume looks at the part file's size, waiting for the moment to kill the client.
KILL_POLL_SECONDS = 0.005
# An offset that has not moved for this long: the killed client's last PATCH has ended on the server.
SETTLED_SECONDS = 1.0


def write_padded_image(path: Path, size: int, block: int = 64 * MIB) -> None:
    """A small PNG (an image by its header, all the API identifies a stored file by) padded to ``size`` bytes
    with pseudo-random ones (incompressible, unlike any other file), written a block at a time, and fsynced:
    its writeback would otherwise slow whatever writes to the disk next, the first round's baseline."""
    generator = np.random.default_rng()
    header = image_bytes(40, 30)
    with path.open("wb") as out:
        out.write(header)
        for start in range(len(header), size, block):
            out.write(generator.bytes(min(block, size - start)))
        out.flush()
        os.fsync(out.fileno())


def mark(path: Path, number: int) -> str:
    """Make the file new content of the same size (its last 8 bytes become ``number``: its header stays an
    image's); its SHA-256."""
    with path.open("r+b") as handle:
        handle.seek(-8, os.SEEK_END)
        handle.write(number.to_bytes(8, "big"))
    return file_sha256(path)


class RssPeak:
    """The largest summed RSS of some processes, sampled in a thread while a ``with`` block runs."""

    def __init__(self, pids: list[int]) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> int:
        return sum(process.memory_info().rss for process in self.processes)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> RssPeak:
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def tus_upload(stack: BenchStack, api: ProxiedApi, path: Path, state: Path | None = None) -> Sent:
    upload = uploader(path, api.url + UPLOADS, stack.key, state)
    try:
        return send(upload)
    finally:
        if state:
            upload.url_storage.close()


def server_offset(stack: BenchStack, url: str) -> int:
    response = requests.head(url, headers={**stack.auth, **TUS_HEADERS}, timeout=10)
    response.raise_for_status()
    return int(response.headers["Upload-Offset"])


def stored_blob(stack: BenchStack, url: str, size: int) -> Path:
    """The finished upload's blob on the volume (once the API says it is whole)."""
    response = requests.get(url, headers=stack.auth, timeout=30)
    response.raise_for_status()
    upload = response.json()
    assert upload["offset"] == upload["size"] == size and upload["file_id"], upload
    return Path(stack.env["STORAGE_ROOT"]) / blob_relpath(upload["sha256"])


def drop_from_page_cache(path: Path) -> None:
    """Give the (durable, so clean) file's page-cache pages back to the kernel, keeping the file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def throughput(stack: BenchStack, api: ProxiedApi, source: Path) -> dict[str, float]:
    workers = gunicorn_workers(api.gunicorn.pid)
    warm_up = stack.workdir / "warm-up.bin"
    write_padded_image(warm_up, WARM_UP_BYTES)
    for number in range(2 * len(workers)):  # the workers' imports and pools belong to idle
        mark(warm_up, number)
        tus_upload(stack, api, warm_up)
    idle = RssPeak(workers).now()
    high_water_idle = {pid: peak_rss_kib(pid) for pid in workers}
    baselines, uploads, rss_peaks = [], [], []
    for number in range(ROUNDS):
        digest = mark(source, number)
        baselines.append(baseline_seconds(source, stack.workdir))
        with RssPeak(workers) as rss:
            sent = tus_upload(stack, api, source)
        uploads.append(sent.seconds)
        rss_peaks.append(rss.peak)
        assert sent.start_offset == 0 and sent.body_bytes == FILE_BYTES, sent
        blob = stored_blob(stack, sent.url, FILE_BYTES)
        assert file_sha256(blob) == digest, "the stored file is not the one sent"
        drop_from_page_cache(blob)  # as the baseline's copy leaves it, removed
    assert gunicorn_workers(api.gunicorn.pid) == workers, "a gunicorn worker was replaced during the rounds"
    high_water_growth = max(peak_rss_kib(pid) - kib for pid, kib in high_water_idle.items()) * 1024
    mb = FILE_BYTES / 1e6
    ratios = [b / u for b, u in zip(baselines, uploads, strict=True)]
    return {
        "file MiB": FILE_BYTES / MIB,
        "sha256sum+cp+sync MB/s (baseline, best)": mb / min(baselines),
        "tus upload MB/s (best)": mb / min(uploads),
        "tus upload speed / baseline (best of each)": min(baselines) / min(uploads),
        "tus upload speed / baseline (median of rounds)": sorted(ratios)[ROUNDS // 2],
        **{f"  round {number + 1}: tus upload speed / baseline": ratio for number, ratio in enumerate(ratios)},
        "API RSS peak over idle MiB (workers summed, sampled, worst round)": (max(rss_peaks) - idle) / MIB,
        "API RSS high-water growth MiB (VmHWM, largest of the workers)": high_water_growth / MIB,
    }


def settled_offset(stack: BenchStack, url: str) -> int:
    """The server's offset once it stops moving (the killed client's PATCH has ended there)."""
    last = server_offset(stack, url)
    while True:
        time.sleep(SETTLED_SECONDS)
        now = server_offset(stack, url)
        if now == last:
            return now
        last = now


def kill_mid_piece(stack: BenchStack, client: subprocess.Popen[bytes], url: str) -> int:
    """SIGKILL the client's process group once the server has written half the file and half a piece more.

    The part file's size on the volume says where the server's writing is within a piece (its
    ``Upload-Offset`` moves only when a piece ends): the kill lands in the middle of a body,
    as a dropped connection would. Returns the part's size then.
    """
    part = Path(stack.env["STORAGE_ROOT"]) / part_relpath(uuid.UUID(url.rsplit("/", 1)[1]))
    target = FILE_BYTES // 2 + CHUNK_BYTES // 2

    def written() -> int:
        assert client.poll() is None, "the client ended before it had sent half the file"
        try:
            size = part.stat().st_size
        except FileNotFoundError:
            return 0
        return size if size >= target else 0

    at_kill = wait_until(written, 600, KILL_POLL_SECONDS, "half the upload")
    os.killpg(client.pid, signal.SIGKILL)
    return at_kill


def resume(stack: BenchStack, api: ProxiedApi, source: Path) -> dict[str, float]:
    digest = mark(source, ROUNDS)
    state = stack.workdir / "tus-urls.json"
    argv = [sys.executable, "-m", "bench.tus_client", str(source), api.url + UPLOADS, str(state)]
    client = subprocess.Popen(
        argv,
        env={**os.environ, "YOLO_JOBS_API_KEY": stack.key},
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert client.stdout is not None
        url = client.stdout.readline().decode().strip()
        assert url, "the client printed no upload URL"
        at_kill = kill_mid_piece(stack, client, url)
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
        client.wait()
    assert client.returncode == -signal.SIGKILL, "the client ended before it was killed"
    left_at = settled_offset(stack, url)
    resumed = tus_upload(stack, api, source, state)
    assert resumed.url == url, "the client did not resume the upload its store kept"
    assert resumed.start_offset == left_at and left_at + resumed.body_bytes == FILE_BYTES, (left_at, resumed)
    assert file_sha256(stored_blob(stack, url, FILE_BYTES)) == digest, (
        "the resumed upload's stored file is not the source"
    )
    return {
        "resume: bytes the server had written when killed / file size": at_kill / FILE_BYTES,
        "resume: server offset after the kill / file size": left_at / FILE_BYTES,
        "resume: bytes sent on resume / file size": resumed.body_bytes / FILE_BYTES,
        "resume: MB/s of the rest": resumed.body_bytes / 1e6 / resumed.seconds,
        "resume: stored SHA-256 equals the source's (1 = yes)": 1.0,
    }


@contextmanager
def source_file(stack: BenchStack) -> Iterator[Path]:
    """The file to send, in the run's folder: the same filesystem as the storage root."""
    path = stack.workdir / "source.bin"
    write_padded_image(path, FILE_BYTES)
    try:
        yield path
    finally:
        path.unlink()


def run() -> dict[str, float]:
    with bench_stack() as stack, proxied_api(stack) as api, source_file(stack) as source:
        return {**throughput(stack, api, source), **resume(stack, api, source)}

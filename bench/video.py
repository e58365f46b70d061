"""Video jobs through the system (issue 26): frames/s against a bare Ultralytics loop, memory over a long video,
and scaling from one worker process to two, each beside a baseline measured in the same run.

- **Frames/s**: a 20-second 1280x720 30 fps clip (two segments of ``VIDEO_SEGMENT_SECONDS``, one for each
  process), every frame analysed, POSTed to the real API with a warm worker of two processes (the machine's
  cores): frames analysed over the time from the POST to the job's ``finished_at``, and over the worker's time
  (``started_at`` to ``finished_at``). Baselines: the bare ``YOLO(...).predict(source=clip, stream=True)`` loop
  over the same clip in this process, on the ``.pt`` weights and on their OpenVINO export (which a CPU worker
  runs), both at the model's own inference size. Goal: the system at 1.5 times the bare loop or more.
- **Scaling**: the same job on a worker of one process: two processes' frames/s over one's.
- **Memory**: the worker's RSS (its master and pool processes, summed) sampled every :data:`SAMPLE_SECONDS`
  while a 30-minute 320x180 30 fps video is analysed at 2 frames/s; the peak while each quarter of the
  sampled frames was being done, and the last quarter's peak over the first's (goal: about 1). Baseline:
  the whole-run peak of the same worker on the 5-minute video that the 30-minute one repeats six times (goal:
  30-minute peak over it about 1). The 5-minute video's encoding time (x264 ultrafast, ``harness.videos``)
  and the repeat's are reported.

Other work on the machine moves every figure: the frames/s measurements run in :data:`ROUNDS` rounds, each the
bare OpenVINO loop and the system on two processes and on one back to back (the order of the last two
alternating), and compare the best of each side, with every round's ratios beside. Every worker runs with
``RESULT_REUSE=off`` (the same file is analysed more than once) and is warmed up, its model loaded in every
process and a short clip of the run's size analysed, before anything is timed.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil
import requests
from sqlalchemy import select

from bench.api_post import GENEROUS_QUOTAS
from bench.environment import BenchStack, bench_stack
from bench.rerun import in_worker, timed
from config import Settings
from config.paths import BUNDLED_MODEL
from config.ultralytics import configure_ultralytics
from harness.processes import ServiceProcess, start_api, start_worker, wait_for_job, wait_until
from harness.videos import BITEXACT, write_shapes_video
from inference.backends import OPENVINO, openvino_export_of
from inference.defaults import DEFAULT_INFERENCE_SIZE
from storage import Storage
from storage.tables import Job

FRAME_RATE = 30
CLIP_SECONDS = 20
CLIP_SIZE = (1280, 720)
SHORT_SECONDS = 5 * 60
REPEATS = 6  # the 30-minute video is the 5-minute one six times
MEMORY_SIZE = (320, 180)
MEMORY_SAMPLE_FPS = 2.0
WARM_UP_SECONDS = 2
WORKER_PROCESSES = 2
SAMPLE_SECONDS = 0.25
QUARTERS = 4
JOB_TIMEOUT = 900
ROUNDS = 2
MB = 1e6


@dataclass(frozen=True)
class Clip:
    """A video of ``seconds``, the frames a job at ``sample_fps`` analyses in it, and how long it took to make."""

    path: Path
    seconds: int
    frames: int
    making_seconds: float
    sample_fps: float | None = None

    def fields(self) -> dict[str, str]:
        """The job's form fields: its sample rate, when it has one."""
        return {} if self.sample_fps is None else {"fps": str(self.sample_fps)}


def encode(path: Path, seconds: int, size: tuple[int, int], sample_fps: float | None = None) -> Clip:
    started = time.perf_counter()
    truth = write_shapes_video(path, seconds=seconds, width=size[0], height=size[1], fps=FRAME_RATE)
    return Clip(path, seconds, len(truth.frames_at(sample_fps)), time.perf_counter() - started, sample_fps)


def bare_loop(weights: Path, clip: Clip, imgsz: int) -> float:
    """Frames/s of Ultralytics' own ``predict(source=video, stream=True)`` over ``clip`` at ``imgsz``, in this
    process, the model loaded and warmed up first."""
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    model.predict(np.zeros((CLIP_SIZE[1], CLIP_SIZE[0], 3), np.uint8), imgsz=imgsz, verbose=False, device="cpu")
    started = time.perf_counter()
    frames = sum(1 for _ in model.predict(source=str(clip.path), stream=True, imgsz=imgsz, verbose=False, device="cpu"))
    seconds = time.perf_counter() - started
    assert frames == clip.frames, f"the bare loop read {frames} frames of {clip.frames}"
    return frames / seconds


def repeated(source: Clip, times: int, path: Path) -> Clip:
    """``source`` ``times`` times in a row, its packets copied with their times shifted, no frame encoded again:
    a long video in seconds, not minutes (x264's groups of pictures are closed, so each copy decodes alone)."""
    started = time.perf_counter()
    with av.open(str(path), "w", format="mp4", options=BITEXACT) as writing:
        stream = None
        for copy in range(times):
            with av.open(str(source.path)) as reading:
                original = reading.streams.video[0]
                stream = stream or writing.add_stream_from_template(original)
                shift = copy * round(source.seconds / original.time_base)
                for packet in reading.demux(original):
                    if packet.dts is None:  # the demuxer's empty packet at the end
                        continue
                    packet.pts, packet.dts, packet.stream = packet.pts + shift, packet.dts + shift, stream
                    writing.mux(packet)
    seconds = time.perf_counter() - started
    return Clip(path, source.seconds * times, source.frames * times, seconds, source.sample_fps)


def inference_size() -> int:
    """The bundled model's own inference size, which the worker runs it at (an export's loop defaults to 640)."""
    configure_ultralytics(Settings.from_env().worker)
    from ultralytics import YOLO

    return YOLO(str(BUNDLED_MODEL)).overrides.get("imgsz", DEFAULT_INFERENCE_SIZE)


def submit(stack: BenchStack, base_url: str, clip: Clip) -> str:
    with clip.path.open("rb") as video:
        files = [("image", (clip.path.name, video, "application/octet-stream"))]
        response = requests.post(
            f"{base_url}/api/v1/jobs", files=files, data=clip.fields(), headers=stack.auth, timeout=300
        )
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def analysed(job: dict[str, Any], clip: Clip) -> int:
    """The job's frames analysed, which must be every frame it samples, none failed."""
    assert job["status"] == "succeeded", job
    frames = job["progress"]["frames"]
    assert frames["done"] == clip.frames and frames["failed"] == 0, (frames, clip.frames)
    return frames["done"]


def model_backends(worker: ServiceProcess) -> list[str]:
    """The backend of each model load the worker logged (one per pool process)."""
    return [line["backend"] for line in worker.json_log_lines() if line["message"].startswith("model loaded")]


@contextmanager
def warm_worker(stack: BenchStack, base_url: str, processes: int, warm_up: Clip) -> Iterator[ServiceProcess]:
    """A worker of ``processes`` processes, each with its model loaded, that has analysed ``warm_up`` once a
    process; stopped afterwards."""
    log = stack.workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
    worker = start_worker({**stack.env, "RESULT_REUSE": "off"}, log, "inference", processes)
    try:
        wait_until(lambda: len(model_backends(worker)) == processes, 120, what="the model in every process")
        for job_id in [submit(stack, base_url, warm_up) for _ in range(processes)]:
            analysed(wait_for_job(base_url, job_id, JOB_TIMEOUT, stack.auth), warm_up)
        yield worker
    finally:
        worker.stop()


@dataclass(frozen=True)
class Throughput:
    """Frames/s of one video job: from the POST to ``finished_at``, and in the worker."""

    system: float
    worker: float
    openvino: bool


def throughput(stack: BenchStack, base_url: str, clip: Clip, warm_up: Clip, processes: int) -> Throughput:
    with warm_worker(stack, base_url, processes, warm_up) as worker:
        seconds, job = timed(stack, base_url, lambda: submit(stack, base_url, clip))
        backends = model_backends(worker)
    frames = analysed(job, clip)
    return Throughput(frames / seconds, frames / in_worker(job), set(backends) == {OPENVINO})


@dataclass(frozen=True)
class Round:
    """The frames/s measured back to back: the bare loop on the OpenVINO export, the system on each worker size."""

    bare_openvino: float
    system: dict[int, Throughput]  # by worker processes


def measure_round(stack: BenchStack, base_url: str, clips: tuple[Clip, Clip], imgsz: int, number: int) -> Round:
    """Round ``number``: the bare loop, then the system on two processes and on one (which first alternates)."""
    clip, warm_up = clips
    bare = bare_loop(openvino_export_of(str(BUNDLED_MODEL)), clip, imgsz)
    sizes = (WORKER_PROCESSES, 1) if number % 2 == 0 else (1, WORKER_PROCESSES)
    return Round(bare, {n: throughput(stack, base_url, clip, warm_up, n) for n in sizes})


def tree_rss(pid: int) -> int:
    """The RSS of a process and its descendants, summed (a pool process may be replaced: read them anew)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


@dataclass
class MemoryTrace:
    """The worker's RSS as the job's frames were done: one (frames done, RSS bytes) pair per sample."""

    samples: list[tuple[int, int]] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max(rss for _, rss in self.samples)

    def quarter_peaks(self, total: int) -> list[int]:
        """The peak RSS while each quarter of ``total`` frames was being done (the end counts in the last)."""
        peaks = [0] * QUARTERS
        for done, rss in self.samples:
            quarter = min(QUARTERS - 1, done * QUARTERS // total)
            peaks[quarter] = max(peaks[quarter], rss)
        assert all(peaks), f"a quarter of the frames went by unsampled: {peaks}"
        return peaks


@contextmanager
def rss_sampler(worker: ServiceProcess, storage: Storage, job_id: str) -> Iterator[MemoryTrace]:
    """Sample the job's frames done and the worker's RSS every :data:`SAMPLE_SECONDS` while the block runs."""
    trace, stop = MemoryTrace(), threading.Event()
    query = select(Job.done_frames).where(Job.id == uuid.UUID(job_id))

    def sample() -> None:
        with storage.database.transaction() as session:
            done = session.scalar(query) or 0
        trace.samples.append((done, tree_rss(worker.pid)))

    def run() -> None:
        sample()
        while not stop.wait(SAMPLE_SECONDS):
            sample()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield trace
    finally:
        stop.set()
        thread.join()
        sample()


def memory(stack: BenchStack, base_url: str, clips: list[Clip], warm_up: Clip) -> list[MemoryTrace]:
    """The RSS trace of each clip's job, one after the other on one warm worker."""
    storage = Storage(stack.env["DATABASE_URL"], stack.workdir / "storage")
    traces = []
    try:
        with warm_worker(stack, base_url, WORKER_PROCESSES, warm_up) as worker:
            for clip in clips:
                job_id = submit(stack, base_url, clip)
                with rss_sampler(worker, storage, job_id) as trace:
                    analysed(wait_for_job(base_url, job_id, JOB_TIMEOUT, stack.auth), clip)
                traces.append(trace)
    finally:
        storage.dispose()
    return traces


def throughput_figures(clip: Clip, bare_pt: float, rounds: list[Round]) -> dict[str, float]:
    two = [r.system[WORKER_PROCESSES] for r in rounds]
    one = [r.system[1] for r in rounds]
    bare_openvino = max(r.bare_openvino for r in rounds)
    best_two, best_one = max(t.system for t in two), max(t.system for t in one)
    figures = {
        f"clip: frames ({CLIP_SECONDS} s of {CLIP_SIZE[0]}x{CLIP_SIZE[1]} at {FRAME_RATE} fps)": clip.frames,
        "clip: encode s": clip.making_seconds,
        "bare predict loop frames/s, .pt (PyTorch; baseline, once)": bare_pt,
        f"bare predict loop frames/s, OpenVINO export (baseline, best of {ROUNDS})": bare_openvino,
        "system frames/s, 2 processes (POST to finished_at, best)": best_two,
        "system frames/s, 2 processes, in the worker (started_at to finished_at, best)": max(t.worker for t in two),
        "system (best) / bare .pt loop (once; goal >= 1.5)": best_two / bare_pt,
        "system / bare OpenVINO loop (best of each; goal >= 1.5)": best_two / bare_openvino,
        "system frames/s, 1 process (POST to finished_at, best)": best_one,
        "system frames/s, 1 process, in the worker (best)": max(t.worker for t in one),
        "2 processes / 1 process frames/s (best of each)": best_two / best_one,
        "2 processes / 1 process frames/s (in the worker, best of each)": (
            max(t.worker for t in two) / max(t.worker for t in one)
        ),
        "workers ran the OpenVINO export (1 = yes)": float(all(t.openvino for t in two + one)),
    }
    for number, measured in enumerate(rounds, start=1):
        system = measured.system[WORKER_PROCESSES].system
        figures[f"  round {number}: system / bare OpenVINO loop"] = system / measured.bare_openvino
        figures[f"  round {number}: 2 processes / 1 process"] = system / measured.system[1].system
    return figures


def memory_figures(long: Clip, short: Clip, long_trace: MemoryTrace, short_trace: MemoryTrace) -> dict[str, float]:
    quarters = long_trace.quarter_peaks(long.frames)
    figures: dict[str, float] = {
        "5-min video: encode s (320x180, 30 fps, x264 ultrafast)": short.making_seconds,
        f"30-min video: repeat s (the 5-min video {REPEATS} times, packets copied)": long.making_seconds,
        f"30-min video: frames analysed (at {MEMORY_SAMPLE_FPS:g} fps)": long.frames,
    }
    for number, peak in enumerate(quarters, start=1):
        share = 100 * number // QUARTERS
        figures[f"30-min video: worker peak RSS MB, frames {share - 100 // QUARTERS}-{share} %"] = peak / MB
    figures |= {
        "30-min video: last quarter peak / first quarter peak (goal ~1.0)": quarters[-1] / quarters[0],
        "5-min video: worker peak RSS MB (baseline)": short_trace.peak / MB,
        "30-min video: worker peak RSS MB": long_trace.peak / MB,
        "peak RSS 30-min / 5-min (goal ~1.0)": long_trace.peak / short_trace.peak,
    }
    return figures


def run() -> dict[str, float]:
    export = openvino_export_of(str(BUNDLED_MODEL))
    assert export.is_dir(), f"no OpenVINO export at {export}: the repository keeps it (python -m inference.export)"
    with tempfile.TemporaryDirectory(prefix="yolo-bench-video-") as tmp:
        folder = Path(tmp)
        clip = encode(folder / "clip.mp4", CLIP_SECONDS, CLIP_SIZE)
        clips = clip, encode(folder / "clip-warm-up.mp4", WARM_UP_SECONDS, CLIP_SIZE)
        short = encode(folder / "short.mp4", SHORT_SECONDS, MEMORY_SIZE, MEMORY_SAMPLE_FPS)
        long = repeated(short, REPEATS, folder / "long.mp4")
        memory_warm_up = encode(folder / "memory-warm-up.mp4", WARM_UP_SECONDS, MEMORY_SIZE, MEMORY_SAMPLE_FPS)
        imgsz = inference_size()
        bare_pt = bare_loop(BUNDLED_MODEL, clip, imgsz)
        with bench_stack(**GENEROUS_QUOTAS) as stack:
            server, base_url = start_api(stack.env, stack.workdir / "gunicorn.log")
            try:
                rounds = [measure_round(stack, base_url, clips, imgsz, number) for number in range(ROUNDS)]
                short_trace, long_trace = memory(stack, base_url, [short, long], memory_warm_up)
            finally:
                server.stop()
    return throughput_figures(clip, bare_pt, rounds) | memory_figures(long, short, long_trace, short_trace)

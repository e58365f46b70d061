"""Video jobs under real faults: a worker SIGKILLed mid-segment, a corrupt stretch, broken uploads, cancel and
retry, deletion (issue 26).

A video job runs as segments, each under a lease, resumed by pts, and ended in PostgreSQL (``jobs/parts.py``,
``tasks/parts.py``). Only real faults show that this holds: every frame analysed exactly once after a kill, the
lost frames of a corrupt stretch counted and named, nothing stored of a file that is not a video, no segment
writing after a cancel, no per-frame row left after a deletion.

One stack for the module, with a database, vhost and storage root of its own (its reaper, sweeping every second
with 6-second leases, must not touch other modules' jobs): gunicorn planning 2-second segments, a maintenance
worker and beat for the reaper, and two inference workers of one process each, as two nodes: one is SIGKILLed
(its process group) while the other goes on, and a new one takes its place. Videos are generated in the test
(``harness.videos``), small (320x180 at 10 fps), so every frame's number is known.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import av
import pytest
import requests
from sqlalchemy import func, select

from harness import services
from harness.processes import VENV_BIN, ServiceProcess, start_api, start_worker, wait_for_job, wait_until
from harness.videos import (
    corrupt_middle,
    truncated_without_moov,
    write_empty_video,
    write_shapes_video,
    write_video_bomb,
)
from storage import Storage
from storage.blobs import blob_relpath, file_sha256
from storage.parts import part_relpath
from storage.tables import FrameResult, JobPart, StoredFile, Tombstone, Upload
from tests.conftest import open_storage
from tests.functional.hardening_support import assert_json_error
from tests.helpers import TestKey, add_key, post_job

SEGMENT_SECONDS = 2
FPS = 10
FRAMES_PER_SEGMENT = SEGMENT_SECONDS * FPS
# Short leases and a reaper every second: a killed worker's segment is re-sent within seconds.
LEASE_SECONDS = 6
# Inference at 1280 px (the frames letterboxed up from 320x180) is slow enough on a CPU, OpenVINO included, that a
# segment spans several writes (one at least every 2 s), so a kill or a cancel lands between two of them.
SLOW = {"imgsz": "1280"}
# A segment a test interrupts still has at least this many frames to do.
FRAMES_LEFT = 4
FRAMES_PAGE = {"limit": "5000"}
API_PROCESSES = 2
TUS = {"Tus-Resumable": "1.0.0"}
ERROR_RANGE = re.compile(r"frames? (\d+)(?:-(\d+))? could not be decoded \((\d+) frames?\)")


@dataclass
class Stack:
    """The module's services, and a ``requests`` session sending a key of its database."""

    env: dict[str, str]
    url: str
    api: requests.Session
    key: TestKey
    storage: Storage
    logs: Path
    api_server: ServiceProcess
    # Two inference nodes of one process each: one may die while the other goes on, as in a cluster.
    workers: list[ServiceProcess]

    def replace_worker(self, dead: ServiceProcess, name: str) -> None:
        self.workers[self.workers.index(dead)] = start_inference_worker(self.env, self.logs / f"{name}.log")


def start_inference_worker(env: dict[str, str], log_path: Path) -> ServiceProcess:
    return start_worker(env, log_path, queues="inference", concurrency=1)


def model_loaded(worker: ServiceProcess) -> bool:
    """Whether the worker's process has loaded its model (seconds after ``ready.``: until then it takes no task)."""
    return any(line["message"].startswith("model loaded") for line in worker.json_log_lines())


@pytest.fixture(scope="module")
def stack(
    services_env: dict[str, str], run_id: str, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    database, vhost = f"yolo_test_{run_id}_video_faults", f"yolo-test-{run_id}-video-faults"
    env = {
        **services_env,
        "DATABASE_URL": services.create_database(database),
        "CELERY_BROKER_URL": services.create_vhost(vhost),
        "STORAGE_ROOT": str(tmp_path_factory.mktemp("video-faults-storage")),
        "VIDEO_SEGMENT_SECONDS": str(SEGMENT_SECONDS),
        "JOB_LEASE_SECONDS": str(LEASE_SECONDS),
        "REAPER_INTERVAL_SECONDS": "1",
        "INFERENCE_BATCH_SIZE": "2",
        "WEB_CONCURRENCY": str(API_PROCESSES),
    }
    logs = logs_dir / "video-faults"
    storage = open_storage(env)
    key = add_key(storage, "video-faults")
    started: list[ServiceProcess] = []
    workers: list[ServiceProcess] = []  # the stack's own list: a test replaces a worker it killed
    try:
        server, url = start_api(env, logs / "gunicorn.log")
        started.append(server)
        started.append(start_worker(env, logs / "maintenance.log", queues="maintenance", concurrency=1))
        beat_argv = [str(VENV_BIN / "celery"), "-A", "tasks", "beat", "--loglevel", "INFO", "-s", str(logs / "beat")]
        started.append(ServiceProcess(beat_argv, env, logs / "beat.log").start())
        workers += [start_inference_worker(env, logs / f"worker-{name}.log") for name in ("a", "b")]
        wait_until(lambda: all(model_loaded(w) for w in workers), 120, what="the workers' models")
        with requests.Session() as api:
            api.headers.update(key.headers)
            current = Stack(env, url, api, key, storage, logs, server, workers)
            yield current
    finally:
        for process in [*workers, *reversed(started)]:
            process.stop()
        storage.dispose()
        services.delete_vhost(vhost)
        services.drop_database(database)


# Jobs through the API


def submit_video(stack: Stack, path: Path, **form: str) -> str:
    response = post_job(stack.api, stack.url, [(path.name, path.read_bytes())], **form)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def job_json(stack: Stack, job_id: str) -> dict[str, Any]:
    response = stack.api.get(f"{stack.url}/api/v1/jobs/{job_id}", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def frames_progress(stack: Stack, job_id: str) -> dict[str, int]:
    return dict(job_json(stack, job_id)["progress"]["frames"])


def wait_for_end(stack: Stack, job_id: str, timeout: float = 120) -> dict[str, Any]:
    return wait_for_job(stack.url, job_id, timeout, headers=stack.key.headers)


def job_action(stack: Stack, job_id: str, action: str) -> dict[str, Any]:
    response = stack.api.post(f"{stack.url}/api/v1/jobs/{job_id}/{action}", timeout=10)
    assert response.ok, response.text
    return dict(response.json())


def analysed_frames(stack: Stack, job: dict[str, Any]) -> list[int]:
    """The frame numbers the frames endpoint lists for the job's one video, in its order (duplicates kept)."""
    [result] = job["results"]
    response = stack.api.get(stack.url + result["frames_url"], params=FRAMES_PAGE, timeout=30)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next"] is None, "one page holds every frame of these videos"
    return [frame["frame"] for frame in page["frames"]]


# Rows, as the database has them


def segments(stack: Stack, job_id: str) -> list[JobPart]:
    with stack.storage.database.transaction() as session:
        query = select(JobPart).where(JobPart.job_id == uuid.UUID(job_id), JobPart.kind == "segment")
        rows = list(session.scalars(query.order_by(JobPart.number)))
        session.expunge_all()
    return rows


def upload_ids(stack: Stack, job_id: str) -> list[uuid.UUID]:
    with stack.storage.database.transaction() as session:
        return list(session.scalars(select(Upload.id).where(Upload.job_id == uuid.UUID(job_id))))


def frame_rows(stack: Stack, uploads: list[uuid.UUID]) -> int:
    with stack.storage.database.transaction() as session:
        query = select(func.count()).select_from(FrameResult).where(FrameResult.upload_id.in_(uploads))
        return session.scalar(query) or 0


def part_rows(stack: Stack, uploads: list[uuid.UUID]) -> int:
    with stack.storage.database.transaction() as session:
        query = select(func.count()).select_from(JobPart).where(JobPart.upload_id.in_(uploads))
        return session.scalar(query) or 0


def stored_file_rows(stack: Stack, sha256: str) -> int:
    with stack.storage.database.transaction() as session:
        query = select(func.count()).select_from(StoredFile).where(StoredFile.sha256 == sha256)
        return session.scalar(query) or 0


def mid_segment(stack: Stack, job_id: str) -> list[JobPart]:
    """The segments running with some of their frames written and :data:`FRAMES_LEFT` or more still to do (a kill
    or a cancel now lands between two of their writes)."""
    return [
        part
        for part in segments(stack, job_id)
        if part.status == "running" and 0 < part.units_done <= (part.units_expected or 0) - FRAMES_LEFT
    ]


def wait_mid_segment(stack: Stack, job_id: str) -> list[JobPart]:
    return wait_until(lambda: mid_segment(stack, job_id), 120, interval=0.05, what=f"a segment of {job_id} mid-way")


def worker_running(stack: Stack, job_id: str, part: JobPart) -> ServiceProcess:
    """The inference worker whose log says it started this attempt at the part."""
    started = f"part started kind=segment number={part.number} attempt={part.attempts}"
    return next(
        worker
        for worker in stack.workers
        if any(line["message"] == started and line["job_id"] == job_id for line in worker.json_log_lines())
    )


def stopped_attempts(stack: Stack, job_id: str) -> int:
    """How many attempts at the job's parts the workers' logs say stopped (their lease or their job gone)."""
    return sum(
        line["message"].startswith("part stopped") and line["job_id"] == job_id
        for worker in stack.workers
        for line in worker.json_log_lines()
    )


# Media


def undecodable_frames(path: Path) -> list[int]:
    """The frames (by number) that FFmpeg lists but cannot decode, reading the whole file in order: the ground
    truth of a corrupt file, independent of how the workers seek and decode a segment."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        listed, decoded = [], set()
        for packet in container.demux(stream):
            if packet.pts is not None and packet.size:
                listed.append(packet.pts)
            decoded |= {frame.pts for frame in decode_quietly(stream, packet)}
        rate, base = stream.average_rate, stream.time_base
        assert rate is not None and base is not None
        return sorted(round(pts * base * rate) for pts in listed if pts not in decoded)


def decode_quietly(stream: av.VideoStream, packet: av.Packet) -> list[av.VideoFrame]:
    try:
        return stream.codec_context.decode(packet if packet.size else None)
    except av.FFmpegError:
        return []


def ranges_of(frames: list[int], step: int) -> list[tuple[int, int, int]]:
    """Runs of frames ``step`` apart, as (first, last, count)."""
    runs: list[list[int]] = []
    for frame in frames:
        if runs and frame - runs[-1][-1] == step:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return [(run[0], run[-1], len(run)) for run in runs]


def truncated_mp4(path: Path) -> None:
    """An MP4 cut before its ``moov``: an upload that stopped short."""
    whole = path.with_name("whole.mp4")
    write_shapes_video(whole, seconds=2, width=320, height=180, fps=FPS, count=1)
    truncated_without_moov(whole, path)


def small_bomb(path: Path) -> None:
    """A frame size FFmpeg accepts (16000x16000), over the pixel cap: refused from the headers, before decoding."""
    write_video_bomb(path, 16000, 16000)


# Uploads


def tus_upload(stack: Stack, data: bytes) -> tuple[str, requests.Response]:
    """A resumable upload of ``data`` in two pieces: its URL and the answer to the last piece."""
    created = requests.post(
        f"{stack.url}/api/v1/uploads",
        headers={**TUS, **stack.key.headers, "Upload-Length": str(len(data))},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    url = f"{stack.url}{created.headers['Location']}"
    half = len(data) // 2
    answer: requests.Response | None = None
    for offset, piece in ((0, data[:half]), (half, data[half:])):
        headers = {**TUS, **stack.key.headers, "Upload-Offset": str(offset)}
        answer = requests.patch(
            url, data=piece, headers={**headers, "Content-Type": "application/offset+octet-stream"}, timeout=30
        )
    assert answer is not None
    return url, answer


def assert_nothing_stored(stack: Stack, sha256: str) -> None:
    assert stored_file_rows(stack, sha256) == 0
    assert not stack.storage.blobs.path_of(blob_relpath(sha256)).exists()
    assert list(stack.storage.blobs.tmp_dir.iterdir()) == [], "no temp file left behind"


def assert_no_process_lost(stack: Stack) -> None:
    """Every process still up: gunicorn booted each of its processes once (none replaced after dying, of memory or
    else), logged no error, and the inference workers lost no pool process."""
    api_lines = stack.api_server.json_log_lines()
    assert stack.api_server.running() and all(worker.running() for worker in stack.workers)
    assert sum(line["message"].startswith("Booting worker") for line in api_lines) == API_PROCESSES
    assert [line for line in api_lines if line["level"] in ("ERROR", "CRITICAL")] == []
    assert not any("WorkerLostError" in worker.log_text() for worker in stack.workers)


# Tests


def test_a_worker_killed_mid_segment_leaves_every_frame_analysed_once(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "kill.mp4"
    truth = write_shapes_video(path, seconds=8, width=320, height=180, fps=FPS, count=2, seed=1)
    expected = truth.frames_at()
    job_id = submit_video(stack, path, **SLOW)

    cut_off = wait_mid_segment(stack, job_id)[0]
    victim = worker_running(stack, job_id, cut_off)
    victim.kill()  # SIGKILL to the whole process group: master and child; the other worker goes on
    at_kill = frames_progress(stack, job_id)
    assert 0 < at_kill["done"] < len(expected), at_kill
    stack.replace_worker(victim, "worker-after-kill")

    job = wait_for_end(stack, job_id, 150)
    assert job["status"] == "succeeded", job
    assert job["progress"]["frames"] == {"done": len(expected), "total": len(expected), "failed": 0}
    assert analysed_frames(stack, job) == expected
    assert frame_rows(stack, upload_ids(stack, job_id)) == len(expected)
    after = segments(stack, job_id)
    [resumed] = [part for part in after if part.id == cut_off.id]
    assert resumed.status == "done" and resumed.attempts > cut_off.attempts, "the reaper re-sent it"
    assert [part.units_done for part in after] == [FRAMES_PER_SEGMENT] * len(after)


def test_a_corrupt_stretch_is_counted_and_named_and_the_rest_analysed(stack: Stack, tmp_path: Path) -> None:
    source, path = tmp_path / "clean.mp4", tmp_path / "corrupt.mp4"
    # Keyframes every 2.5 s: the group lost in the middle (frames 50-74) straddles two 2-second segments.
    truth = write_shapes_video(source, seconds=12, width=320, height=180, fps=FPS, count=2, gop=25, seed=2)
    lost = corrupt_middle(source, path, gops=1, seed=2)
    assert undecodable_frames(path) == list(lost), "the file fails where corrupt_middle says"
    sampled = truth.frames_at(fps=5)  # every other frame
    failed = [frame for frame in sampled if frame in lost]
    by_segment = groupby(failed, key=lambda frame: frame // FRAMES_PER_SEGMENT)
    expected_ranges = [run for _segment, frames in by_segment for run in ranges_of(list(frames), 2)]
    assert len(expected_ranges) == 2, "the stretch crosses a segment boundary"

    job = wait_for_end(stack, submit_video(stack, path, fps="5"), 120)

    assert job["status"] == "succeeded", job
    frames = {"done": len(sampled) - len(failed), "total": len(sampled), "failed": len(failed)}
    assert job["progress"]["frames"] == frames
    [result] = job["results"]
    assert result["error"].startswith(f"{len(failed)} of {len(sampled)} sampled frames could not be analysed: ")
    named = [(int(a), int(b or a), int(k)) for a, b, k in ERROR_RANGE.findall(result["error"])]
    assert named == expected_ranges, result["error"]
    assert analysed_frames(stack, job) == [frame for frame in sampled if frame not in lost]


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (truncated_mp4, 415, "unsupported_media"),
        (write_empty_video, 415, "unsupported_media"),
        (write_video_bomb, 413, "image_too_large"),  # 32768x32768, a size FFmpeg's decoders refuse
        (small_bomb, 413, "image_too_large"),
    ],
    ids=["truncated-mp4", "no-frames", "bomb-32768", "bomb-16000"],
)
def test_a_broken_video_is_refused_by_either_upload_and_nothing_is_kept(
    stack: Stack, tmp_path: Path, make: Callable[[Path], None], status: int, code: str
) -> None:
    path = tmp_path / "broken.bin"
    make(path)
    data, sha256 = path.read_bytes(), file_sha256(path)

    multipart = post_job(stack.api, stack.url, [("broken.mp4", data)])
    assert_json_error(multipart.status_code, multipart.json(), status, code)
    assert_nothing_stored(stack, sha256)

    url, last_piece = tus_upload(stack, data)
    assert_json_error(last_piece.status_code, last_piece.json(), status, code)
    assert requests.head(url, headers={**TUS, **stack.key.headers}, timeout=10).status_code == 404
    assert not stack.storage.blobs.path_of(part_relpath(uuid.UUID(url.rsplit("/", 1)[1]))).exists()
    assert_nothing_stored(stack, sha256)

    assert_no_process_lost(stack)


def test_cancel_stops_every_segment_at_its_next_batch_and_retry_completes_once(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "long.mp4"
    truth = write_shapes_video(path, seconds=12, width=320, height=180, fps=FPS, count=2, seed=4)
    expected = truth.frames_at()
    job_id = submit_video(stack, path, **SLOW)
    uploads = upload_ids(stack, job_id)

    wait_mid_segment(stack, job_id)
    assert job_action(stack, job_id, "cancel")["status"] == "cancelled"
    at_cancel = segments(stack, job_id)
    running = [part for part in at_cancel if part.status == "running"]
    # Each attempt in flight stops at its next write (every 2 s at most) and its task returns, freeing its worker.
    wait_until(lambda: stopped_attempts(stack, job_id) >= len(running), 10, what="the running segments to stop")
    settled = (frame_rows(stack, uploads), frames_progress(stack, job_id)["done"])
    time.sleep(3)
    assert (frame_rows(stack, uploads), frames_progress(stack, job_id)["done"]) == settled
    assert settled[0] < len(expected)
    done = [part.id for part in at_cancel if part.status == "done"]
    assert [part.id for part in segments(stack, job_id) if part.status == "done"] == done, "none ended since"
    assert job_json(stack, job_id)["status"] == "cancelled"

    assert job_action(stack, job_id, "retry")["status"] in ("queued", "running")
    job = wait_for_end(stack, job_id, 90)
    assert job["status"] == "succeeded", job
    assert job["progress"]["frames"] == {"done": len(expected), "total": len(expected), "failed": 0}
    assert analysed_frames(stack, job) == expected
    assert frame_rows(stack, uploads) == len(expected)


def test_deleting_a_video_job_frees_its_frames_and_bytes(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    truth = write_shapes_video(path, seconds=4, width=320, height=180, fps=FPS, count=2, seed=5)
    job_id = submit_video(stack, path)
    assert wait_for_end(stack, job_id)["status"] == "succeeded"
    uploads, sha256 = upload_ids(stack, job_id), file_sha256(path)
    assert frame_rows(stack, uploads) == len(truth.frames) and part_rows(stack, uploads) > 0

    response = stack.api.delete(f"{stack.url}/api/v1/jobs/{job_id}", timeout=30)

    assert response.status_code == 204, response.text
    assert stack.api.get(f"{stack.url}/api/v1/jobs/{job_id}", timeout=10).status_code == 404
    assert frame_rows(stack, uploads) == part_rows(stack, uploads) == 0
    with stack.storage.database.transaction() as session:
        tombstone = session.scalars(select(Tombstone).where(Tombstone.subject_id == uuid.UUID(job_id))).one()
        assert tombstone.bytes_freed == path.stat().st_size
    assert not stack.storage.blobs.path_of(blob_relpath(sha256)).exists()

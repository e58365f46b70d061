"""Flower shows a running job's done/total on its task page and in its task list (issue 27).

Flower reads task events, not the result backend: the worker's ``task-progress`` event carries the
progress in words as its ``result`` (tasks/reporting.py), which Flower's task page, its task list
(``/tasks/datatable``, with the Makefile's ``--tasks_columns``) and ``/api/task/info`` show. A real
Flower, started with ``make flower``'s options, watches the session's worker run an image job and a
video job of a few seconds each, side by side; once they end, Flower shows each task's return value.
"""

from __future__ import annotations

import re
import shlex
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import requests

from config.paths import PROJECT_ROOT
from harness.images import image_bytes
from harness.processes import VENV_BIN, ServiceProcess, free_port, wait_for_flower_to_hear, wait_for_job, wait_until
from harness.videos import write_shapes_video
from jobs.messages import DETECT_TASK, PART_TASK
from tests.helpers import post_job

AUTH = ("ops", "s3cret")
# Each job takes a few seconds, so its progress is written (at most every 2 s) before its end: 16 images at
# imgsz 1280 (as test_operations' Flower test), and 40 frames at 320x180 in one segment, also at 1280 (about
# 0.25 s a frame on OpenVINO: a segment written by batches of 8 runs for several seconds).
IMAGES, IMAGE_SIZE = 16, "1280"
VIDEO_SECONDS, VIDEO_FPS = 4, 10


def flower_options() -> list[str]:
    """Flower's own options in the Makefile's FLOWER_CMD (``make flower``, ``make run``), less its port."""
    (line,) = [line for line in (PROJECT_ROOT / "Makefile").read_text().splitlines() if line.startswith("FLOWER_CMD")]
    return [option for option in shlex.split(line.split(" flower ", 1)[1]) if not option.startswith("--port=")]


class Flower(NamedTuple):
    url: str
    process: ServiceProcess


@pytest.fixture(scope="module")
def flower(services_env: dict[str, str], logs_dir: Path, worker: ServiceProcess) -> Iterator[Flower]:
    """A real Flower on a free port, started after the session's worker, once it has heard it (events reach it)."""
    port = free_port()
    argv = [str(VENV_BIN / "celery"), "-A", "tasks", "flower", *flower_options(), f"--port={port}"]
    process = ServiceProcess(
        argv, {**services_env, "FLOWER_BASIC_AUTH": ":".join(AUTH)}, logs_dir / f"flower-progress-{port}.log"
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_flower_to_hear(process, url, worker)
        yield Flower(url, process)
    finally:
        process.stop()


def task_views(flower: str, task_id: str) -> dict[str, str] | None:
    """What Flower shows as the task's result: /api/task/info, the task list's row, and the task page (None while
    Flower knows no such task)."""
    answer = requests.get(f"{flower}/api/task/info/{task_id}", auth=AUTH, timeout=5)
    if answer.status_code == 404:
        return None
    info = answer.json()
    listed = requests.post(
        f"{flower}/tasks/datatable",
        data={"draw": 1, "start": 0, "length": 100, "order[0][column]": 0, "columns[0][data]": "received"},
        auth=AUTH,
        timeout=5,
    ).json()
    (row,) = [row for row in listed["data"] if row["uuid"] == task_id]
    page = requests.get(f"{flower}/task/{task_id}", auth=AUTH, timeout=5)
    page.raise_for_status()
    (shown,) = re.findall(r"<dt>Result</dt>\s*<dd><pre[^>]*><code>(.*?)</code>", page.text, re.S)
    return {"info": info["result"], "list": row["result"], "page": shown, "state": info["state"], "name": info["name"]}


def running_part_of(flower: str, job_id: str) -> str | None:
    """The id of the job's part task that Flower shows in PROGRESS, if any."""
    tasks = requests.get(f"{flower}/api/tasks", params={"taskname": PART_TASK}, auth=AUTH, timeout=5).json()
    for task_id, task in tasks.items():
        if job_id in (task["args"] or "") and task["state"] == "PROGRESS":
            return str(task_id)
    return None


def shown_in_progress(flower: str, task_id: str, pattern: str) -> dict[str, str] | None:
    """The task's views while Flower shows it in PROGRESS, each ``done/total unit``; None once it ran on past."""
    views = task_views(flower, task_id)
    if views is None or views.pop("state") != "PROGRESS":
        return None
    del views["name"]
    assert all(re.fullmatch(pattern, shown) for shown in views.values()), views
    return views


def part_in_progress(flower: str, job_id: str, pattern: str) -> tuple[str, dict[str, str]] | None:
    """The job's part task in PROGRESS and its views (see :func:`shown_in_progress`), if any."""
    part = running_part_of(flower, job_id)
    views = shown_in_progress(flower, part, pattern) if part else None
    return (part, views) if part and views else None


def ended(flower: str, task_id: str) -> dict[str, str] | None:
    """The task's views once Flower shows it succeeded."""
    views = task_views(flower, task_id)
    return views if views and views["state"] == "SUCCESS" else None


def test_flower_shows_done_of_total_while_jobs_run(
    flower: Flower, api: requests.Session, api_url: str, tmp_path: Path
) -> None:
    """An image job shows "n/16 images", a video job's segment "n/40 frames"; each ends with its return value."""
    images = [(f"p{i}.png", image_bytes(320, 240, seed=uuid.uuid4().int % 10**6)) for i in range(IMAGES)]
    image_job = post_job(api, api_url, images, imgsz=IMAGE_SIZE)
    assert image_job.status_code == 202, image_job.text
    video = tmp_path / "clip.mp4"
    write_shapes_video(video, seconds=VIDEO_SECONDS, width=320, height=180, fps=VIDEO_FPS, count=2)
    video_job = post_job(api, api_url, [("clip.mp4", video.read_bytes())], imgsz=IMAGE_SIZE)
    assert video_job.status_code == 202, video_job.text
    job_id, video_job_id = image_job.json()["job_id"], video_job.json()["job_id"]

    images_shown = wait_until(
        lambda: shown_in_progress(flower.url, job_id, rf"([1-9]|1[0-5])/{IMAGES} images"), 60, 0.1, "n/16 images"
    )
    frames = VIDEO_SECONDS * VIDEO_FPS
    part, frames_shown = wait_until(
        lambda: part_in_progress(flower.url, video_job_id, rf"[1-9]\d*/{frames} frames"), 60, 0.1, "n/40 frames"
    )
    print(f"\nFlower showed {images_shown} and {frames_shown}")

    for finished in (job_id, video_job_id):
        assert wait_for_job(api_url, finished, 120, api.headers)["status"] == "succeeded"
    job_end = wait_until(lambda: ended(flower.url, job_id), 30, 0.2, "the job's task in SUCCESS")
    assert job_end["name"] == DETECT_TASK
    assert f"'job_id': '{job_id}'" in job_end["info"] and f"'total': {IMAGES}" in job_end["info"], job_end
    assert job_end["list"] == job_end["info"] and "images" not in job_end["page"]
    part_end = wait_until(lambda: ended(flower.url, part), 30, 0.2, "the part's task in SUCCESS")
    assert "'status': 'done'" in part_end["info"] and "frames" not in part_end["page"], part_end


def test_the_task_list_has_a_result_column(flower: Flower) -> None:
    page = requests.get(f"{flower.url}/tasks", auth=AUTH, timeout=5)
    assert page.status_code == 200
    assert re.findall(r'<th data-column="(\w+)">', page.text)[:4] == ["name", "uuid", "state", "result"]


def test_flower_started_after_a_worker_warns_of_nothing(flower: Flower) -> None:
    """Its start-up questions to the workers were answered: no "Inspect method … failed" (make run waits for a
    worker before it starts Flower, scripts/await_worker.py)."""
    log = flower.process.log_text()
    assert "Connected to amqp://" in log
    assert "[W " not in log and "[E " not in log, log[-3000:]

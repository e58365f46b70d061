"""The ``yolo-jobs`` command and Python client on a video, against a real gunicorn and Celery worker: the video goes
by tus (a bar of its bytes), the job samples and tracks it (a bar of its frames), the MOT export holds tracks on
the sampled frames, the Python client pages the same frames by time, and an export without ``--out`` is written
under the name the server gives it."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from tqdm import tqdm

from harness.processes import ServiceProcess
from harness.videos import GroundTruth, write_shapes_video
from jobs.video_exports import VIDEO_CSV_COLUMNS
from storage import Storage
from tests.functional.cli_support import yolo_jobs
from tests.helpers import TestKey, add_key
from yolo_jobs_client import Client
from yolo_jobs_client.errors import EXIT_OK

FPS = 5  # sampled of the clip's 10 frames a second
TIMEOUT = 60  # seconds a command may take: a 4 s clip at 320x180


@dataclass(frozen=True)
class Clip:
    path: Path
    truth: GroundTruth


@dataclass(frozen=True)
class TrackedRun:
    """``submit clip.mp4 --fps 5 --track --wait --export mot`` as it ended: the command, its MOT file, the job."""

    stdout: str
    stderr: str
    mot: Path
    job: dict[str, Any]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return Clip(path, write_shapes_video(path, seconds=4, width=320, height=180, fps=10, count=2))


@pytest.fixture()
def tenant(storage: Storage) -> TestKey:
    return add_key(storage, f"cli-video-{uuid.uuid4().hex[:8]}")


def job_of(api_url: str, key: TestKey, job_id: str) -> dict[str, Any]:
    answer = requests.get(f"{api_url}/api/v1/jobs/{job_id}", headers=key.headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def bar_ends(stderr: str) -> list[str]:
    """The states tqdm drew (it redraws a line after ``\\r``)."""
    return [state.strip() for state in re.split(r"[\r\n]", stderr) if state.strip()]


def submit_tracked(api_url: str, key: TestKey, clip: Clip, folder: Path) -> TrackedRun:
    mot = folder / "clip.txt"
    state = folder / "uploads.json"
    args = ("submit", str(clip.path), "--fps", str(FPS), "--track", "--wait", "--export", "mot", "--out", str(mot))
    result = yolo_jobs(api_url, key.key, "--progress", *args, "--state-file", str(state), timeout=TIMEOUT)
    assert result.returncode == EXIT_OK, result.stderr
    made, finished = (line.split("\t") for line in result.stdout.splitlines())
    assert made[1:] == ["queued", "1 files"] and finished == [made[0], "succeeded", "1/1"]
    return TrackedRun(result.stdout, result.stderr, mot, job_of(api_url, key, made[0]))


def test_a_video_is_sent_by_tus_sampled_tracked_and_exported_as_mot(
    api_url: str, worker: ServiceProcess, tenant: TestKey, clip: Clip, tmp_path: Path
) -> None:
    run = submit_tracked(api_url, tenant, clip, tmp_path)
    sampled = clip.truth.frames_at(fps=FPS)
    frames = run.job["progress"]["frames"]
    assert frames == {"done": len(sampled), "total": len(sampled), "failed": 0}, run.job["progress"]
    assert (run.job["parameters"]["fps"], run.job["parameters"]["track"]) == (FPS, True)
    (video,) = run.job["files"]
    assert (video["filename"], video["media"]["kind"], video["size"]) == ("clip.mp4", "video", clip.path.stat().st_size)

    states = bar_ends(run.stderr)
    size = clip.path.stat().st_size
    upload_end = [s for s in states if s.startswith("clip.mp4: 100%")]
    assert upload_end, f"the upload bar ends full: {states}"
    shown = tqdm.format_sizeof(size)
    assert f"{shown}/{shown}" in upload_end[-1], upload_end[-1]
    detect_end = [s for s in states if s.startswith("detect: 100%")]
    assert detect_end and f"{len(sampled)}/{len(sampled)}" in detect_end[-1], f"the detection bar ends full: {states}"
    assert states.index(upload_end[-1]) < states.index(detect_end[-1])
    assert f"{len(sampled)} frames analysed in 1 job" in run.stderr
    assert "could not be decoded" not in run.stderr
    assert f"wrote {run.mot}" in run.stderr

    rows = [line.split(",") for line in run.mot.read_text().splitlines()]
    assert rows, "the shapes are found and tracked"
    assert all(len(row) == 10 for row in rows)
    assert {int(row[0]) for row in rows} <= {index + 1 for index in sampled}, "1-based numbers of sampled frames"
    assert min(int(row[1]) for row in rows) >= 1, "every line has a track"
    umask = os.umask(0)
    os.umask(umask)
    assert run.mot.stat().st_mode & 0o777 == 0o666 & ~umask, "written as any file of the user's"

    with Client(api_url, tenant.key) as client:
        paged = list(client.frames(run.job["job_id"], video["file_id"], limit=3))
        window = list(client.frames(run.job["job_id"], video["file_id"], start=1.0, end=2.0))
    assert [frame["frame"] for frame in paged] == sampled, "every sampled frame once, in order, over pages of 3"
    assert [frame["frame"] for frame in window] == [i for i in sampled if 1.0 <= i / clip.truth.fps < 2.0]
    tracked = {
        (frame["frame"] + 1, box["track"])
        for frame in paged
        for box in frame["detections"]
        if box.get("track", -1) >= 1
    }
    assert tracked == {(int(row[0]), int(row[1])) for row in rows}, "the MOT file holds the frames' tracks"


def test_an_export_without_out_is_named_by_the_server_and_a_rerun_changes_the_sampling(
    api_url: str, worker: ServiceProcess, tenant: TestKey, clip: Clip, tmp_path: Path
) -> None:
    recording = tmp_path / "recording"  # no suffix: known for a video by its first bytes
    shutil.copyfile(clip.path, recording)
    folder = tmp_path / "exports"
    folder.mkdir()
    args = ("submit", str(recording), "--fps", "2", "--export", "csv", "--state-file", str(tmp_path / "state.json"))
    result = yolo_jobs(api_url, tenant.key, "--no-progress", *args, cwd=folder, timeout=TIMEOUT)
    assert result.returncode == EXIT_OK, result.stderr
    job_id = result.stdout.split("\t")[0]

    answer = requests.get(
        f"{api_url}/api/v1/jobs/{job_id}/export", params={"format": "csv"}, headers=tenant.headers, timeout=10
    )
    assert answer.status_code == 200, answer.text
    named = f"job-{job_id}-recording-csv.csv"
    assert answer.headers["Content-Disposition"] == f"attachment; filename={named}"
    assert [path.name for path in folder.iterdir()] == [named]
    assert f"wrote {named}" in result.stderr
    written = (folder / named).read_bytes()
    assert written == answer.content
    rows = list(csv.reader(io.StringIO(written.decode())))
    assert tuple(rows[0]) == VIDEO_CSV_COLUMNS
    assert {int(row[0]) for row in rows[1:]} <= set(clip.truth.frames_at(fps=2))

    rerun = yolo_jobs(
        api_url, tenant.key, "--no-progress", "rerun", job_id, "--fps", "1", "--end", "2", "--track", "--wait"
    )
    assert rerun.returncode == EXIT_OK, rerun.stderr
    made, finished = (line.split("\t") for line in rerun.stdout.splitlines())
    assert finished == [made[0], "succeeded", "1/1"]
    again = job_of(api_url, tenant, made[0])
    parameters = again["parameters"]
    assert (parameters["fps"], parameters["start"], parameters["end"], parameters["track"]) == (1, None, 2, True)
    sampled = len(clip.truth.frames_at(fps=1, end=2))
    assert again["progress"]["frames"] == {"done": sampled, "total": sampled, "failed": 0}

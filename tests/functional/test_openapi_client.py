"""A client generated from the served /api/v1/openapi.json by openapi-python-client, as a user would make one,
against a real gunicorn and Celery worker: it submits a job of images and one of a tracked video, and downloads
every export format, each through the format's own operation and through the query form, and each body parses
as the format it is (pycocotools for COCO, a zip of YOLO labels, CSV, Label Studio tasks, MOT lines, CVAT XML).

The client is generated once for the module, in a folder of its own, under a package name of its own (the
document's title would name it yolo_jobs_client, the project's own client), with the generator's post hooks
(ruff) off. What the generator could not generate is checked too: only the tus piece (PATCH), whose content
type is tus' own and which a tus client sends.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from xml.etree import ElementTree

import pytest
import requests
from pycocotools.coco import COCO

from harness.processes import ServiceProcess
from harness.videos import write_shapes_video
from jobs.exports import CSV_COLUMNS
from jobs.video_exports import VIDEO_CSV_COLUMNS
from storage.tables import TERMINAL_STATUSES
from tests.helpers import TestKey
from training.shapes import CLASS_NAMES, render_sample

PACKAGE = "generated_yolo_jobs"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
# What the generator may leave out, and why: a tus piece is application/offset+octet-stream, tus' own type.
NOT_GENERATED = {"PATCH /api/v1/uploads/{upload_id}"}
IMAGE_FORMATS = ("coco", "yolo", "csv", "labelstudio")
VIDEO_FORMATS = ("mot", "cvat-video", "coco", "csv")
TIMEOUT = 90  # seconds a job may take on the CPU worker


@pytest.fixture(scope="module")
def generated(api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package, generated from the live document and imported."""
    folder = tmp_path_factory.mktemp("generated")
    document = folder / "openapi.json"
    document.write_bytes(requests.get(f"{api_url}/api/v1/openapi.json", timeout=10).content)
    config = folder / "config.json"
    config.write_text(json.dumps({"package_name_override": PACKAGE, "post_hooks": []}))
    command = [str(GENERATOR), "generate", "--path", str(document), "--meta", "none", "--config", str(config)]
    started = time.monotonic()
    run = subprocess.run([*command, "--output-path", str(folder / PACKAGE)], capture_output=True, text=True)
    print(f"\nopenapi-python-client generated the client in {time.monotonic() - started:.1f} s")
    assert run.returncode == 0, run.stdout + run.stderr
    warned = [line for line in run.stderr.splitlines() if line.startswith("WARNING parsing ")]
    assert {line.removeprefix("WARNING parsing ").split(" within ")[0] for line in warned} == NOT_GENERATED, warned
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def client(generated: ModuleType, api_url: str, api_key: TestKey) -> Iterator[Any]:
    with generated.AuthenticatedClient(base_url=api_url, token=api_key.key, raise_on_unexpected_status=True) as made:
        yield made


def module(name: str) -> Any:
    """A module of the generated package: ``models``, ``types``, an operation's (``api.exports.export_coco``)."""
    return importlib.import_module(f"{PACKAGE}.{name}")


def file(name: str, data: bytes, mime_type: str) -> Any:
    return module("types").File(payload=io.BytesIO(data), file_name=name, mime_type=mime_type)


def submit_and_wait(client: Any, files: list[Any], **options: Any) -> Any:
    """Submit ``files`` as a job through the generated client and poll it (also generated) until it ends."""
    form = module("models").SubmitJobFilesSubmitForm(image=files, **options)
    submission = module("api.jobs.submit_job").sync(client=client, body=form)
    assert type(submission).__name__ == "Submission", submission
    show, deadline = module("api.jobs.show_job"), time.monotonic() + TIMEOUT
    job = show.sync(submission.job_id, client=client)
    while str(job.status) not in TERMINAL_STATUSES:
        assert time.monotonic() < deadline, f"the job is still {job.status}"
        time.sleep(0.2)
        job = show.sync(submission.job_id, client=client)
    assert str(job.status) == "succeeded", job
    return job


@pytest.fixture(scope="module")
def image_job(client: Any, worker: ServiceProcess) -> Any:
    images = []
    for index in range(2):
        buffer = io.BytesIO()
        render_sample(seed=27, index=index)[0].save(buffer, format="PNG")
        images.append(file(f"shapes-{index}.png", buffer.getvalue(), "image/png"))
    return submit_and_wait(client, images)


@pytest.fixture(scope="module")
def video_job(client: Any, worker: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_shapes_video(path, seconds=2, width=320, height=180, fps=10, count=2)
    return submit_and_wait(client, [file("clip.mp4", path.read_bytes(), "video/mp4")], fps=5.0, track=True)


def export(client: Any, job: Any, export_format: str) -> tuple[Any, bytes]:
    """The export through the format's own operation (parsed as the document declares it) and through the query
    form, which a generated client hands over as bytes whatever the format."""
    own = module(f"api.exports.export_{export_format.replace('-', '_')}").sync_detailed(job.job_id, client=client)
    assert own.status_code == 200, own.content
    named = module("models").ExportJobFormat(export_format)
    query_form = module("api.exports.export_job").sync(job.job_id, client=client, format_=named)
    assert type(query_form).__name__ == "File", query_form
    return own.parsed, query_form.payload.read()


def detections(job: Any) -> int:
    return sum(len(result.detections) for result in job.results)


def test_every_image_export_parses_as_its_format(client: Any, image_job: Any, tmp_path: Path) -> None:
    assert detections(image_job) > 0, "the bundled model finds the shapes"
    parsed = {name: export(client, image_job, name) for name in IMAGE_FORMATS}

    coco, coco_bytes = parsed["coco"]
    assert type(coco).__name__ == "CocoExport" and json.loads(coco_bytes) == coco.to_dict()
    (tmp_path / "coco.json").write_bytes(coco_bytes)
    loaded = COCO(str(tmp_path / "coco.json"))
    assert sorted(image["file_name"] for image in loaded.loadImgs(loaded.getImgIds())) == [
        "shapes-0.png",
        "shapes-1.png",
    ]
    assert len(loaded.getAnnIds()) == len(coco.annotations) == detections(image_job)
    assert [category.name for category in coco.categories] == list(CLASS_NAMES)

    labels, labels_bytes = parsed["yolo"]
    with zipfile.ZipFile(labels.payload) as archive, zipfile.ZipFile(io.BytesIO(labels_bytes)) as again:
        assert "data.yaml" in archive.namelist() and sorted(archive.namelist()) == sorted(again.namelist())
        lines = [
            line
            for name in archive.namelist()
            if name.startswith("labels/")
            for line in archive.read(name).decode().splitlines()
        ]
    assert len(lines) == detections(image_job)
    assert all(len(line.split()) == 5 and 0 <= float(line.split()[1]) <= 1 for line in lines)

    table, table_bytes = parsed["csv"]
    assert isinstance(table, str) and table.encode() == table_bytes
    rows = list(csv.DictReader(io.StringIO(table)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len([row for row in rows if row["name"]]) == detections(image_job)

    tasks, tasks_bytes = parsed["labelstudio"]
    assert [type(task).__name__ for task in tasks] == ["LabelStudioTask"] * 2
    assert len(json.loads(tasks_bytes)) == 2
    regions = [region for task in tasks for region in task.predictions[0]["result"]]
    assert len(regions) == detections(image_job) and {r["type"] for r in regions} == {"rectanglelabels"}


def test_every_video_export_parses_as_its_format(client: Any, video_job: Any) -> None:
    assert detections(video_job) == 0 and video_job.results[0].frames_url, "a video's boxes are by frame"
    parsed = {name: export(client, video_job, name) for name in VIDEO_FORMATS}

    tracks, tracks_bytes = parsed["mot"]
    assert isinstance(tracks, str) and tracks.encode() == tracks_bytes
    lines = [line.split(",") for line in tracks.splitlines()]
    assert lines and all(len(values) == 10 and int(values[1]) >= 1 for values in lines), "frame,id,x,y,w,h,conf,…"

    cvat, cvat_bytes = parsed["cvat-video"]
    root = ElementTree.fromstring(cvat.payload.read())
    assert root.tag == "annotations" and root.findall("track") and ElementTree.fromstring(cvat_bytes).tag == root.tag

    coco, coco_bytes = parsed["coco"]
    assert type(coco).__name__ == "CocoExport" and coco["videos"][0]["name"] == "clip.mp4"
    assert len(coco.images) == video_job.progress.frames.done == 10, "2 s sampled at 5 frames a second"
    assert json.loads(coco_bytes)["annotations"] == [annotation.to_dict() for annotation in coco.annotations]

    table, _ = parsed["csv"]
    assert tuple(next(csv.reader(io.StringIO(table)))) == VIDEO_CSV_COLUMNS
    boxes = [row for row in csv.DictReader(io.StringIO(table)) if row["name"]]
    assert len(boxes) == len(coco.annotations) > 0, "a row per box of each sampled frame"

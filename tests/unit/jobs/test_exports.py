"""Export formats built from a job's detections: COCO (read back by pycocotools), YOLO labels, CSV, Label Studio."""

from __future__ import annotations

import csv
import io
import json
import uuid
import zipfile
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from sqlalchemy import event

from config import Settings
from harness.images import image_bytes
from jobs.catalog import LoadedModel, model_classes, record_loaded_model
from jobs.exports import CHUNK_BYTES, Detection, ExportImage, JobExport, LabelNames, build, export_classes, job_export
from jobs.lifecycle import FileResult, JobParams, begin_attempt, record_results
from jobs.queries import UploadsInPages
from jobs.service import JobService
from storage import Storage
from tests.helpers import LEASE, create_queued_job, job_state

CLASSES = {0: "circle", 1: "square", 2: "triangle"}


def image(filename: str, *detections: Detection, width: int = 200, height: int = 100) -> ExportImage:
    file_id = str(uuid.uuid4())
    return ExportImage(file_id, filename, width, height, list(detections), f"http://api/files/{file_id}/content")


def url_of(file_id: str, filename: str) -> str:
    return f"/files/{file_id}/{filename}"


def sample() -> JobExport:
    return JobExport(
        "job-1",
        "default",
        "succeeded",
        CLASSES,
        [
            image(
                "a.png", Detection(0, "circle", 0.9, 10, 20, 50, 60), Detection(2, "triangle", 0.5, 100, 0, 200, 100)
            ),
            image("a.png", Detection(1, "square", 0.75, 0, 0, 20, 10)),
            image("empty.jpg"),
        ],
    )


def test_coco_loads_in_pycocotools_with_boxes_as_xywh(tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    path.write_bytes(build(sample(), "coco").content)
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) == 3
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == set(CLASSES.values())
    first = coco.loadImgs(1)[0]
    assert (first["file_name"], first["width"], first["height"]) == ("a.png", 200, 100)
    circle = coco.loadAnns(coco.getAnnIds(imgIds=[1], catIds=[1]))[0]
    assert circle["bbox"] == [10, 20, 40, 40] and circle["score"] == 0.9 and circle["area"] == 1600
    assert coco.getAnnIds(imgIds=[3]) == []


def test_yolo_labels_are_normalised_and_colliding_names_kept_apart() -> None:
    archive = zipfile.ZipFile(io.BytesIO(build(sample(), "yolo").content))
    assert sorted(archive.namelist()) == [
        "data.yaml",
        "files.csv",
        "labels/a-2.txt",
        "labels/a.txt",
        "labels/empty.txt",
    ]
    assert archive.read("labels/a.txt").decode().splitlines() == [
        "0 0.150000 0.400000 0.200000 0.400000",
        "2 0.750000 0.500000 0.500000 1.000000",
    ]
    assert archive.read("labels/empty.txt") == b""
    manifest = list(csv.DictReader(io.StringIO(archive.read("files.csv").decode())))
    assert [(row["label"], row["filename"], row["job_id"]) for row in manifest] == [
        ("labels/a.txt", "a.png", "job-1"),
        ("labels/a-2.txt", "a.png", "job-1"),
        ("labels/empty.txt", "empty.jpg", "job-1"),
    ]
    assert "nc: 3" in archive.read("data.yaml").decode()
    with_conf = zipfile.ZipFile(io.BytesIO(build(sample(), "yolo", with_confidence=True).content))
    assert with_conf.read("labels/a-2.txt").decode() == "1 0.050000 0.050000 0.100000 0.100000 0.750000\n"


def test_label_names_are_unique_ignoring_case() -> None:
    names, filenames = LabelNames(), ["x.png", "X.jpg", "x-2.png", "dir.v1/x.tif", ""]
    assert [names.name_for(f) for f in filenames] == ["x.txt", "X-2.txt", "x-2-2.txt", "x-3.txt", "image.txt"]


def test_csv_has_one_row_per_detection_and_one_for_an_image_with_none() -> None:
    """As a video's CSV has for an empty frame: the image seen empty is in the file, its detection columns empty."""
    exported = sample()
    rows = list(csv.DictReader(io.StringIO(build(exported, "csv").content.decode())))
    assert len(rows) == 4
    header = "job file filename class name confidence x1 y1 x2 y2 width height"
    assert list(rows[0]) == header.split()
    assert rows[2] == rows[2] | {"filename": "a.png", "class": "1", "name": "square", "x2": "20", "width": "200"}
    empty = list(exported.images)[2]
    assert rows[3] == {
        **dict.fromkeys(header.split(), ""),
        **{"job": "job-1", "file": empty.file_id, "filename": "empty.jpg", "width": "200", "height": "100"},
    }


def test_label_studio_tasks_hold_rectangles_in_percent() -> None:
    tasks = json.loads(build(sample(), "labelstudio").content)
    assert len(tasks) == 3 and tasks[2]["predictions"][0]["result"] == []
    first = tasks[0]
    assert first["data"]["image"].startswith("http://api/files/") and first["data"]["filename"] == "a.png"
    prediction = first["predictions"][0]
    assert prediction["model_version"] == "default" and prediction["score"] == pytest.approx(0.7)
    region = prediction["result"][1]
    assert region | {"id": None} == {
        "id": None,
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": 200,
        "original_height": 100,
        "image_rotation": 0,
        "value": {"x": 50.0, "y": 0.0, "width": 50.0, "height": 100.0, "rotation": 0, "rectanglelabels": ["triangle"]},
        "score": 0.5,
    }


def test_a_job_exports_only_images_analysed_without_error(store: Storage) -> None:
    job_id = create_queued_job(
        store, image_bytes(seed=1), image_bytes(seed=2), image_bytes(seed=3), params=JobParams("default")
    )
    uploads = job_state(store, job_id).uploads
    found = {"name": "hexagon", "class": 7, "confidence": 0.8, "box": {"x1": 1, "y1": 2, "x2": 3, "y2": 4}}
    with store.database.transaction() as session:
        record_loaded_model(session, LoadedModel("default", "m.pt", None, "detect", {"0": "circle", "1": "square"}))
        run = begin_attempt(session, job_id, LEASE)
        assert run is not None
        results = [
            FileResult(uploads[0].id, 64, 48, [found]),
            FileResult(uploads[1].id, None, None, [], "cannot decode"),
        ]
        record_results(session, job_id, run.lease_token, results, LEASE)
    with store.database.transaction() as session:
        classes = model_classes(session, "default")
    export = job_export(job_state(store, job_id), classes, url_of)
    images = list(export.images)
    assert [i.filename for i in images] == ["img-0.png"], "no error result, no missing result"
    assert images[0].url == f"/files/{images[0].file_id}/img-0.png", "located by its file id and name"
    assert images[0].detections == [Detection(7, "hexagon", 0.8, 1, 2, 3, 4)]
    assert export_classes(export) == {0: "circle", 1: "square", 7: "hexagon"}
    assert export.status == "running"
    with store.database.transaction() as session:
        job, uploads = JobService(Settings(), store, None).export_source(session, job_id, None)
        paged = job_export(job, classes, url_of, uploads)
        assert list(paged.images) == images


def test_an_export_of_many_images_streams_in_bounded_chunks_read_a_page_at_a_time(store: Storage) -> None:
    """A job's rows are read a page at a time, twice for COCO, and its bytes leave in chunks: a 10,000-image
    job's export never holds the whole file or every row."""
    detection = {"name": "circle", "class": 0, "confidence": 0.5, "box": {"x1": 1, "y1": 2, "x2": 30, "y2": 40}}
    job_id = create_queued_job(store, *(image_bytes(seed=4000 + n) for n in range(7)), params=JobParams("default"))
    uploads = job_state(store, job_id).uploads
    with store.database.transaction() as session:
        run = begin_attempt(session, job_id, LEASE)
        assert run is not None
        results = [FileResult(u.id, 64, 48, [detection] * 300) for u in uploads]
        record_results(session, job_id, run.lease_token, results, LEASE)
    with store.database.transaction() as session:
        job, _ = JobService(Settings(), store, None).export_source(session, job_id, None)
        pages = UploadsInPages(session, job_id, page=3)
        reads: list[str] = []
        event.listen(session.get_bind(), "before_cursor_execute", lambda *a: reads.append(str(a[2])))
        exported = build(job_export(job, {}, url_of, pages), "coco")
        chunks = [len(chunk) for chunk in exported.chunks]
        document = json.loads(b"".join(build(job_export(job, {}, url_of, pages), "coco").chunks))
    assert len([sql for sql in reads if "FROM uploads" in sql]) == 2 * 3 * 2, "7 rows in pages of 3, twice per export"
    assert len(chunks) > 1 and max(chunks) < 2 * CHUNK_BYTES
    assert len(document["images"]) == 7 and len(document["annotations"]) == 7 * 300

"""Merging per-job exports (as the server builds them) into one file for a submission."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

from pycocotools.coco import COCO

from jobs.exports import Detection, ExportImage, JobExport, build
from yolo_jobs_client.merge import merge

CLASSES = {0: "circle", 1: "square"}


def job(job_id: str, *filenames: str) -> JobExport:
    shown = [
        ExportImage(f"{job_id}-{n}", name, 100, 100, [Detection(n % 2, CLASSES[n % 2], 0.5, 0, 0, 10, 10)], "u")
        for n, name in enumerate(filenames)
    ]
    return JobExport(job_id, "default", "succeeded", CLASSES, shown)


JOBS = [job("j1", "a.png", "b.png"), job("j2", "a.png", "c.png")]


def parts(export_format: str) -> list[bytes]:
    return [build(j, export_format).content for j in JOBS]


def test_coco_ids_are_renumbered_across_jobs(tmp_path: Path) -> None:
    path = tmp_path / "merged.json"
    path.write_bytes(merge("coco", parts("coco")))
    coco = COCO(str(path))
    assert coco.getImgIds() == [1, 2, 3, 4] and len(coco.getAnnIds()) == 4
    assert [coco.imgs[i]["file_id"] for i in coco.getImgIds()] == ["j1-0", "j1-1", "j2-0", "j2-1"]
    assert [coco.anns[a]["image_id"] for a in coco.getAnnIds()] == [1, 2, 3, 4]
    assert coco.dataset["info"]["job_ids"] == ["j1", "j2"]


def test_yolo_labels_of_two_jobs_keep_the_servers_names_in_a_folder_per_job() -> None:
    """Both jobs have an a.png: each job's a.txt stays as the server named it, in its job's folder, where
    Ultralytics looks for the label of images/<job>/a.png."""
    from ultralytics.data.utils import img2label_paths

    archive = zipfile.ZipFile(io.BytesIO(merge("yolo", parts("yolo"))))
    labels = sorted(n for n in archive.namelist() if n.startswith("labels/"))
    assert labels == ["labels/j1/a.txt", "labels/j1/b.txt", "labels/j2/a.txt", "labels/j2/c.txt"]
    manifest = list(csv.DictReader(io.StringIO(archive.read("files.csv").decode())))
    assert [(row["label"], row["file_id"], row["job_id"]) for row in manifest] == [
        ("labels/j1/a.txt", "j1-0", "j1"),
        ("labels/j1/b.txt", "j1-1", "j1"),
        ("labels/j2/a.txt", "j2-0", "j2"),
        ("labels/j2/c.txt", "j2-1", "j2"),
    ]
    assert archive.read("labels/j2/a.txt") == zipfile.ZipFile(io.BytesIO(parts("yolo")[1])).read("labels/a.txt")
    assert img2label_paths(["set/images/j2/a.png"]) == ["set/labels/j2/a.txt"]


def test_csv_and_label_studio_concatenate() -> None:
    rows = list(csv.DictReader(io.StringIO(merge("csv", parts("csv")).decode())))
    assert [row["job"] for row in rows] == ["j1", "j1", "j2", "j2"]
    tasks = json.loads(merge("labelstudio", parts("labelstudio")))
    assert [task["data"]["file_id"] for task in tasks] == ["j1-0", "j1-1", "j2-0", "j2-1"]


def test_one_part_is_returned_as_it_is() -> None:
    single = build(JOBS[0], "coco").content
    assert merge("coco", [single]) is single

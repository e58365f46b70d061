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


def exports(export_format: str) -> dict[str, bytes]:
    """Each job's export as the server builds it, by job id."""
    return {j.job_id: build(j, export_format).content for j in JOBS}


def merged(export_format: str, served: dict[str, bytes] | None = None, job_ids: list[str] | None = None) -> bytes:
    """The merge of ``job_ids`` (every job by default), fetched from ``served`` (the server's exports by default)."""
    served = exports(export_format) if served is None else served
    return merge(export_format, list(served) if job_ids is None else job_ids, served.__getitem__)


def without_job_id_column(yolo_export: bytes) -> bytes:
    """A YOLO export as a server older than the client writes it: ``files.csv`` has no ``job_id`` column."""
    rebuilt = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(yolo_export)) as archive, zipfile.ZipFile(rebuilt, "w") as older:
        for name in archive.namelist():
            content = archive.read(name)
            if name == "files.csv":
                rows = list(csv.DictReader(io.StringIO(content.decode())))
                manifest = io.StringIO()
                writer = csv.DictWriter(manifest, [column for column in rows[0] if column != "job_id"])
                writer.writeheader()
                writer.writerows({column: row[column] for column in writer.fieldnames} for row in rows)
                content = manifest.getvalue().encode()
            older.writestr(name, content)
    return rebuilt.getvalue()


def test_coco_ids_are_renumbered_across_jobs(tmp_path: Path) -> None:
    path = tmp_path / "merged.json"
    path.write_bytes(merged("coco"))
    coco = COCO(str(path))
    assert coco.getImgIds() == [1, 2, 3, 4] and len(coco.getAnnIds()) == 4
    assert [coco.imgs[i]["file_id"] for i in coco.getImgIds()] == ["j1-0", "j1-1", "j2-0", "j2-1"]
    assert [coco.anns[a]["image_id"] for a in coco.getAnnIds()] == [1, 2, 3, 4]
    info = coco.dataset["info"]
    assert info["job_ids"] == ["j1", "j2"] and info["job_id"] == "j1,j2", "every job named, not the first alone"
    assert (info["model"], info["status"]) == ("default", "succeeded"), "one value where the jobs agree"
    assert info["description"] == "yolo-jobs detections of 2 jobs"


def test_a_merged_coco_names_each_jobs_status_where_they_differ() -> None:
    cancelled = JobExport("j3", "default", "cancelled", CLASSES, [])
    served = {**exports("coco"), "j3": build(cancelled, "coco").content}
    info = json.loads(merged("coco", served))["info"]
    assert (info["job_id"], info["status"]) == ("j1,j2,j3", "succeeded,cancelled")
    assert json.loads(exports("coco")["j1"])["info"]["job_id"] == "j1", "one job's export names it alone"


def test_a_merged_data_yaml_names_every_job_and_its_own_layout(tmp_path: Path) -> None:
    """The first job's dataset, under comments naming each job (as its own data.yaml's first line does) and the
    merged layout (labels/<job_id>/), where a single job's comments describe labels/ alone."""
    from ultralytics.data.utils import check_det_dataset

    single = zipfile.ZipFile(io.BytesIO(exports("yolo")["j1"])).read("data.yaml").decode()
    assert "for job j1" in single.splitlines()[0] and "labels/<image stem>.txt" in single
    text = zipfile.ZipFile(io.BytesIO(merged("yolo"))).read("data.yaml").decode()
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert [line for line in comments if "for job" in line] == [
        '# yolo-jobs: labels predicted by model "default" for job j1',
        '# yolo-jobs: labels predicted by model "default" for job j2',
    ]
    assert "labels/<job_id>/" in comments[0] and not any("labels/<image stem>" in line for line in comments)
    dataset = [line for line in single.splitlines() if not line.startswith("#")]
    assert [line for line in text.splitlines() if not line.startswith("#")] == dataset
    assert text.endswith("\n")
    (tmp_path / "data.yaml").write_text(text)
    (tmp_path / "images").mkdir()
    assert check_det_dataset(str(tmp_path / "data.yaml"), autodownload=False)["names"] == CLASSES


def test_yolo_labels_of_two_jobs_keep_the_servers_names_in_a_folder_per_job() -> None:
    """Both jobs have an a.png: each job's a.txt stays as the server named it, in its job's folder, where
    Ultralytics looks for the label of images/<job>/a.png."""
    from ultralytics.data.utils import img2label_paths

    archive = zipfile.ZipFile(io.BytesIO(merged("yolo")))
    labels = sorted(n for n in archive.namelist() if n.startswith("labels/"))
    assert labels == ["labels/j1/a.txt", "labels/j1/b.txt", "labels/j2/a.txt", "labels/j2/c.txt"]
    manifest = list(csv.DictReader(io.StringIO(archive.read("files.csv").decode())))
    assert [(row["label"], row["file_id"], row["job_id"]) for row in manifest] == [
        ("labels/j1/a.txt", "j1-0", "j1"),
        ("labels/j1/b.txt", "j1-1", "j1"),
        ("labels/j2/a.txt", "j2-0", "j2"),
        ("labels/j2/c.txt", "j2-1", "j2"),
    ]
    assert archive.read("labels/j2/a.txt") == zipfile.ZipFile(io.BytesIO(exports("yolo")["j2"])).read("labels/a.txt")
    assert img2label_paths(["set/images/j2/a.png"]) == ["set/labels/j2/a.txt"]


def test_yolo_exports_of_a_server_without_the_job_id_column_merge_as_the_current_servers_do() -> None:
    """The client knows each export's job (it fetched it by id), so an older server's files.csv merges into
    the same archive, job_id column included."""
    older = {job_id: without_job_id_column(export) for job_id, export in exports("yolo").items()}
    assert "job_id" not in zipfile.ZipFile(io.BytesIO(older["j1"])).read("files.csv").decode()
    archive = zipfile.ZipFile(io.BytesIO(merged("yolo", older)))
    current = zipfile.ZipFile(io.BytesIO(merged("yolo")))
    assert archive.namelist() == current.namelist()
    assert {name: archive.read(name) for name in archive.namelist()} == {
        name: current.read(name) for name in current.namelist()
    }


def test_a_job_named_twice_is_fetched_and_merged_once() -> None:
    """No duplicate zip entries (zipfile's UserWarning is an error under pytest's filterwarnings), no
    label overwritten on extraction, no image counted twice, in the order the jobs were first named."""
    served = exports("yolo")
    fetched: list[str] = []

    def export(job_id: str) -> bytes:
        fetched.append(job_id)
        return served[job_id]

    archive = zipfile.ZipFile(io.BytesIO(merge("yolo", ["j2", "j1", "j2", "j1"], export)))
    assert fetched == ["j2", "j1"]
    assert len(archive.namelist()) == len(set(archive.namelist()))
    manifest = list(csv.DictReader(io.StringIO(archive.read("files.csv").decode())))
    assert [row["label"] for row in manifest] == [
        "labels/j2/a.txt",
        "labels/j2/c.txt",
        "labels/j1/a.txt",
        "labels/j1/b.txt",
    ]
    coco = json.loads(merged("coco", job_ids=["j1", "j1", "j2"]))
    assert coco["info"]["job_ids"] == ["j1", "j2"] and len(coco["images"]) == 4
    assert merged("coco", job_ids=["j1", "j1"]) == exports("coco")["j1"]


def test_csv_and_label_studio_concatenate() -> None:
    rows = list(csv.DictReader(io.StringIO(merged("csv").decode())))
    assert [row["job"] for row in rows] == ["j1", "j1", "j2", "j2"]
    nothing_found = JobExport("j3", "default", "succeeded", CLASSES, [ExportImage("j3-0", "e.png", 8, 6, [], "u")])
    served = {**exports("csv"), "j3": build(nothing_found, "csv").content}
    rows = list(csv.DictReader(io.StringIO(merged("csv", served).decode())))
    assert [(row["job"], row["filename"], row["name"], row["width"]) for row in rows[4:]] == [("j3", "e.png", "", "8")]
    tasks = json.loads(merged("labelstudio"))
    assert [task["data"]["file_id"] for task in tasks] == ["j1-0", "j1-1", "j2-0", "j2-1"]


def test_one_part_is_returned_as_it_is() -> None:
    single = build(JOBS[0], "coco").content
    assert merge("coco", ["j1"], {"j1": single}.__getitem__) is single

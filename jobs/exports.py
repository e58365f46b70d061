"""A finished job's detections as the files labelling and training tools import.

``coco`` (COCO detection JSON), ``yolo`` (a zip of Ultralytics text labels with a
``data.yaml``), ``csv`` (one row per detection) and ``labelstudio`` (Label Studio
tasks with pre-annotations). Pure Python, no Flask: the API hands a job over as
:class:`JobExport` and gets back one file's bytes.

Only images analysed without error are exported: an image without a result (its
job failed or was cancelled first) or one the worker could not decode is left out,
rather than exported as an image with no objects. Memory is bounded by the job's
size (at most ``MAX_FILES_PER_JOB`` images, each with at most Ultralytics'
``max_det`` of 300 detections), so a file is built whole: a few megabytes at most.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from statistics import fmean
from typing import Any

from storage.tables import Job

# Label Studio's "Object Detection with Bounding Boxes" template: <RectangleLabels name="label" toName="image">.
LABEL_STUDIO_FROM_NAME = "label"
LABEL_STUDIO_TO_NAME = "image"
CSV_COLUMNS = (
    "job",
    "file",
    "filename",
    "class",
    "name",
    "confidence",
    "x1",
    "y1",
    "x2",
    "y2",
    "width",
    "height",
)
# files.csv of a YOLO export: each label file, the image it belongs to, and its job.
YOLO_MANIFEST_COLUMNS = ("label", "filename", "file_id", "width", "height", "job_id")


@dataclass(frozen=True)
class Detection:
    """One box in pixels of the original image, as Ultralytics' ``summary()`` gives it."""

    cls: int
    name: str
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class ExportImage:
    """An analysed image: its stored file, the name it was uploaded as, its size and what was found."""

    file_id: str
    filename: str
    width: int
    height: int
    detections: list[Detection]
    url: str  # where a labelling tool can fetch it (the API's content URL)


@dataclass(frozen=True)
class JobExport:
    """What an export is built from."""

    job_id: str
    model: str
    status: str
    classes: dict[int, str]
    images: list[ExportImage]


# The kinds of file an export is: media type and extension.
JSON_FILE = ("application/json", "json")
ZIP_FILE = ("application/zip", "zip")
CSV_FILE = ("text/csv", "csv")
MEDIA_TYPES = tuple(media_type for media_type, _ in (JSON_FILE, ZIP_FILE, CSV_FILE))


@dataclass(frozen=True)
class ExportFile:
    content: bytes
    media_type: str
    extension: str


def job_export(job: Job, model_classes: Mapping[int, str], url_of: Callable[[str], str]) -> JobExport:
    """The job's analysed images (``url_of(file_id)`` locates each) and its classes: the model's as the
    workers reported them, and any a detection names that they lack."""
    images = []
    classes = dict(model_classes)
    for upload in job.uploads:
        result = upload.result
        if result is None or result.error or result.width is None or result.height is None:
            continue
        detections = [
            Detection(
                int(d["class"]),
                str(d["name"]),
                float(d["confidence"]),
                *(float(d["box"][k]) for k in ("x1", "y1", "x2", "y2")),
            )
            for d in result.detections
        ]
        for detection in detections:
            classes.setdefault(detection.cls, detection.name)
        file_id = str(upload.file_id)
        images.append(ExportImage(file_id, upload.filename, result.width, result.height, detections, url_of(file_id)))
    return JobExport(str(job.id), job.model, job.status, dict(sorted(classes.items())), images)


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def coco(export: JobExport) -> ExportFile:
    """COCO detection JSON: category ids are the model's class indexes plus one (COCO counts from 1)."""
    images, annotations = [], []
    for image_id, image in enumerate(export.images, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": image.filename,
                "width": image.width,
                "height": image.height,
                "file_id": image.file_id,
            }
        )
        for d in image.detections:
            width, height = d.x2 - d.x1, d.y2 - d.y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": d.cls + 1,
                    "bbox": [round(d.x1, 3), round(d.y1, 3), round(width, 3), round(height, 3)],
                    "area": round(width * height, 3),
                    "iscrowd": 0,
                    "score": d.confidence,
                }
            )
    document = {
        "info": {
            "description": f"yolo-jobs detections of job {export.job_id}",
            "job_id": export.job_id,
            "model": export.model,
            "status": export.status,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cls + 1, "name": name, "supercategory": ""} for cls, name in export.classes.items()],
    }
    return ExportFile(_json(document), *JSON_FILE)


def unique_label_names(filenames: list[str]) -> list[str]:
    """One label file name per image, ``<stem>.txt``, numbered ``<stem>-2.txt``… when a stem repeats.

    Compared case-insensitively, so the zip also unpacks on a case-insensitive file system.
    """
    taken: set[str] = set()
    names = []
    for filename in filenames:
        stem = PurePath(filename).stem or "image"
        name, number = f"{stem}.txt", 1
        while name.casefold() in taken:
            number += 1
            name = f"{stem}-{number}.txt"
        taken.add(name.casefold())
        names.append(name)
    return names


def data_yaml(export: JobExport) -> str:
    """Ultralytics' dataset YAML: the class names by index (gaps filled, since indexes must run 0…nc-1)."""
    count = max(export.classes, default=-1) + 1
    lines = [
        f"# yolo-jobs: labels predicted by model {json.dumps(export.model)} for job {export.job_id}",
        "# labels/<image stem>.txt: class cx cy w h, normalised to 0-1 (then conf, when asked for)",
        "# files.csv maps each label file to the image it belongs to; put the images in images/ beside this file",
        "train: images",
        "val: images",
        f"nc: {count}",
        "names:",
    ]
    lines += [f"  {cls}: {json.dumps(export.classes.get(cls, f'class{cls}'))}" for cls in range(count)]
    return "\n".join(lines) + "\n"


def yolo_lines(image: ExportImage, with_confidence: bool) -> str:
    """Ultralytics' text labels of one image: ``class cx cy w h`` normalised, and ``conf`` when asked for."""
    lines = []
    for d in image.detections:
        cx, cy = (d.x1 + d.x2) / 2 / image.width, (d.y1 + d.y2) / 2 / image.height
        w, h = (d.x2 - d.x1) / image.width, (d.y2 - d.y1) / image.height
        line = f"{d.cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"
        lines.append(f"{line} {d.confidence:.6f}" if with_confidence else line)
    return "".join(f"{line}\n" for line in lines)


def yolo(export: JobExport, with_confidence: bool = False) -> ExportFile:
    """A zip of ``labels/<stem>.txt`` per image, ``data.yaml``, and ``files.csv`` (label, filename, file_id,
    width, height, job_id).

    The label names are chosen here only (:func:`unique_label_names`): a client merging several jobs'
    archives reads them from ``files.csv``. Without the confidence column the labels load as an
    Ultralytics training set.
    """
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(YOLO_MANIFEST_COLUMNS)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.yaml", data_yaml(export))
        for image, label in zip(export.images, unique_label_names([i.filename for i in export.images]), strict=True):
            archive.writestr(f"labels/{label}", yolo_lines(image, with_confidence))
            writer.writerow(
                (f"labels/{label}", image.filename, image.file_id, image.width, image.height, export.job_id)
            )
        archive.writestr("files.csv", manifest.getvalue())
    return ExportFile(buffer.getvalue(), *ZIP_FILE)


def csv_rows(export: JobExport) -> ExportFile:
    """One row per detection; ``width`` and ``height`` are the image's, the box is in its pixels."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    for image in export.images:
        for d in image.detections:
            box = (round(d.x1, 3), round(d.y1, 3), round(d.x2, 3), round(d.y2, 3))
            writer.writerow(
                (
                    export.job_id,
                    image.file_id,
                    image.filename,
                    d.cls,
                    d.name,
                    d.confidence,
                    *box,
                    image.width,
                    image.height,
                )
            )
    return ExportFile(text.getvalue().encode(), *CSV_FILE)


def label_studio(export: JobExport) -> ExportFile:
    """Label Studio tasks, each with one prediction of ``rectanglelabels`` in percent of the image."""
    tasks = []
    for image in export.images:
        result = [
            {
                "id": f"{image.file_id[:8]}-{number}",
                "type": "rectanglelabels",
                "from_name": LABEL_STUDIO_FROM_NAME,
                "to_name": LABEL_STUDIO_TO_NAME,
                "original_width": image.width,
                "original_height": image.height,
                "image_rotation": 0,
                "value": {
                    "x": round(d.x1 / image.width * 100, 4),
                    "y": round(d.y1 / image.height * 100, 4),
                    "width": round((d.x2 - d.x1) / image.width * 100, 4),
                    "height": round((d.y2 - d.y1) / image.height * 100, 4),
                    "rotation": 0,
                    "rectanglelabels": [d.name],
                },
                "score": d.confidence,
            }
            for number, d in enumerate(image.detections, start=1)
        ]
        prediction = {
            "model_version": export.model,
            "score": round(fmean(d.confidence for d in image.detections), 4) if image.detections else 0.0,
            "result": result,
        }
        data = {"image": image.url, "filename": image.filename, "file_id": image.file_id, "job_id": export.job_id}
        tasks.append({"data": data, "predictions": [prediction]})
    return ExportFile(_json(tasks), *JSON_FILE)


FORMATS: dict[str, Callable[[JobExport], ExportFile]] = {
    "coco": coco,
    "yolo": yolo,
    "csv": csv_rows,
    "labelstudio": label_studio,
}


def build(export: JobExport, export_format: str, with_confidence: bool = False) -> ExportFile:
    """The job in ``export_format`` (one of :data:`FORMATS`); ``with_confidence`` adds YOLO's conf column."""
    if export_format == "yolo":
        return yolo(export, with_confidence)
    return FORMATS[export_format](export)

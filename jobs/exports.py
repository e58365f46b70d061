"""A finished job's detections as the files labelling and training tools import.

``coco`` (COCO detection JSON), ``yolo`` (a zip of Ultralytics text labels with a
``data.yaml``), ``csv`` (one row per detection, one with empty detection columns for an
image with none) and ``labelstudio`` (Label Studio tasks with pre-annotations, each image
by a URL the API chose: a signed one Label Studio loads with no key, ``app.api.signed_files``).
Pure Python, no Flask: the API hands a job over as :class:`JobExport` and gets back one
file's bytes.

COCO names each image by ``file_name`` and ``file_id``, with no ``coco_url``: the tools that read
COCO (pycocotools, Ultralytics' converter, CVAT's importer) find the images by file name beside
the file, and a signed URL in it would make the format people pass around most a key to the images
for as long as the URL lasts. Label Studio is the one consumer that must load them by URL.

Only images analysed without error are exported: an image without a result (its
job failed or was cancelled first) or one the worker could not decode is left out,
rather than exported as an image with no objects.

A job may have ``MAX_JOB_FILES`` (10,000) images of up to Ultralytics' ``max_det`` of
300 detections each, so a file is never built whole: each format yields its bytes in
chunks (:attr:`ExportFile.chunks`) as it goes through the images, which it reads once
or twice (:class:`JobExport.images` may read the job's rows a page at a time each time,
``jobs.queries.uploads_in_pages``). What a format writes last (COCO's categories, YOLO's
``data.yaml`` and ``files.csv``) is all it keeps: the classes, and one label name per image.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from statistics import fmean
from typing import Any

from storage.tables import Job, Upload

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
# An export's bytes are handed on in chunks of about this size.
CHUNK_BYTES = 64 * 1024


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
    url: str  # where a labelling tool can fetch it (a signed URL, or the user's own copy)


@dataclass(frozen=True)
class JobExport:
    """What an export is built from: the model's classes (as the workers reported them; a format adds any a
    detection names that they lack), and the images, which a format may go through twice."""

    job_id: str
    model: str
    status: str
    classes: dict[int, str]
    images: Iterable[ExportImage]


# The kinds of file an export is: media type and extension.
JSON_FILE = ("application/json", "json")
ZIP_FILE = ("application/zip", "zip")
CSV_FILE = ("text/csv", "csv")
MEDIA_TYPES = tuple(media_type for media_type, _ in (JSON_FILE, ZIP_FILE, CSV_FILE))


@dataclass(frozen=True)
class ExportFile:
    """An export's bytes, in chunks made as they are iterated (once), its media type and extension."""

    chunks: Iterable[bytes]
    media_type: str
    extension: str

    @property
    def content(self) -> bytes:
        """The whole file: for an export known to be small (a caller that can, streams :attr:`chunks`)."""
        return b"".join(self.chunks)


class _AnalysedImages:
    """The analysed images of ``uploads`` (each with its result loaded), made anew each time they are iterated."""

    def __init__(self, uploads: Iterable[Upload], url_of: Callable[[str, str], str]) -> None:
        self.uploads = uploads
        self.url_of = url_of

    def __iter__(self) -> Iterator[ExportImage]:
        for upload in self.uploads:
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
            file_id, filename = str(upload.file_id), upload.filename
            url = self.url_of(file_id, filename)
            yield ExportImage(file_id, filename, result.width, result.height, detections, url)


def job_export(
    job: Job,
    model_classes: Mapping[int, str],
    url_of: Callable[[str, str], str],
    uploads: Iterable[Upload] | None = None,
) -> JobExport:
    """The job's analysed images (``url_of(file_id, filename)`` locates each) and the model's classes as the workers
    reported them. The images are those of ``uploads`` (each with its result loaded; re-iterable, such as
    ``jobs.queries.uploads_in_pages``), else of the uploads the job has loaded."""
    images = _AnalysedImages(job.uploads if uploads is None else uploads, url_of)
    return JobExport(str(job.id), job.model, job.status, dict(model_classes), images)


def export_classes(export: JobExport) -> dict[int, str]:
    """The model's classes and any a detection names that they lack, by index."""
    classes = dict(export.classes)
    for image in export.images:
        _add_classes(classes, image)
    return dict(sorted(classes.items()))


def _add_classes(classes: dict[int, str], image: ExportImage) -> None:
    for detection in image.detections:
        classes.setdefault(detection.cls, detection.name)


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def in_chunks(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """``pieces`` joined into chunks of about :data:`CHUNK_BYTES` (the last may be shorter)."""
    buffer: list[bytes] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


def json_array(items: Iterable[Any]) -> Iterator[bytes]:
    """A JSON array of ``items``, piece by piece."""
    yield b"["
    for number, item in enumerate(items):
        yield (b"," if number else b"") + json_bytes(item)
    yield b"]"


def coco(export: JobExport) -> ExportFile:
    """COCO detection JSON: category ids are the model's class indexes plus one (COCO counts from 1)."""
    return ExportFile(in_chunks(_coco_pieces(export)), *JSON_FILE)


def _coco_pieces(export: JobExport) -> Iterator[bytes]:
    classes = dict(export.classes)

    def images() -> Iterator[dict[str, Any]]:
        for image_id, image in enumerate(export.images, start=1):
            _add_classes(classes, image)
            yield {
                "id": image_id,
                "file_name": image.filename,
                "width": image.width,
                "height": image.height,
                "file_id": image.file_id,
            }

    def annotations() -> Iterator[dict[str, Any]]:
        number = 0
        for image_id, image in enumerate(export.images, start=1):
            for d in image.detections:
                number += 1
                width, height = d.x2 - d.x1, d.y2 - d.y1
                yield {
                    "id": number,
                    "image_id": image_id,
                    "category_id": d.cls + 1,
                    "bbox": [round(d.x1, 3), round(d.y1, 3), round(width, 3), round(height, 3)],
                    "area": round(width * height, 3),
                    "iscrowd": 0,
                    "score": d.confidence,
                }

    info = {
        "description": f"yolo-jobs detections of job {export.job_id}",
        "job_id": export.job_id,
        "model": export.model,
        "status": export.status,
    }
    yield b'{"info":' + json_bytes(info) + b',"licenses":[],"images":'
    yield from json_array(images())
    yield b',"annotations":'
    yield from json_array(annotations())
    categories = [{"id": cls + 1, "name": name, "supercategory": ""} for cls, name in sorted(classes.items())]
    yield b',"categories":' + json_bytes(categories) + b"}"


class LabelNames:
    """One label file name per image, ``<stem>.txt``, numbered ``<stem>-2.txt``… when a stem repeats.

    Compared case-insensitively, so the zip also unpacks on a case-insensitive file system.
    """

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def name_for(self, filename: str) -> str:
        stem = PurePath(filename).stem or "image"
        name, number = f"{stem}.txt", 1
        while name.casefold() in self.taken:
            number += 1
            name = f"{stem}-{number}.txt"
        self.taken.add(name.casefold())
        return name


def data_yaml(export: JobExport, classes: Mapping[int, str]) -> str:
    """Ultralytics' dataset YAML: ``classes`` by index (gaps filled, since indexes must run 0…nc-1)."""
    count = max(classes, default=-1) + 1
    lines = [
        f"# yolo-jobs: labels predicted by model {json.dumps(export.model)} for job {export.job_id}",
        "# labels/<image stem>.txt: class cx cy w h, normalised to 0-1 (then conf, when asked for)",
        "# files.csv maps each label file to the image it belongs to; put the images in images/ beside this file",
        "train: images",
        "val: images",
        f"nc: {count}",
        "names:",
    ]
    lines += [f"  {cls}: {json.dumps(classes.get(cls, f'class{cls}'))}" for cls in range(count)]
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


class ZipSink:
    """Where a zip is written as it is made: each entry's bytes are taken away once written (not seekable)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def yolo(export: JobExport, with_confidence: bool = False) -> ExportFile:
    """A zip of ``labels/<stem>.txt`` per image, ``files.csv`` (label, filename, file_id, width, height,
    job_id) and ``data.yaml``.

    The label names are chosen here only (:class:`LabelNames`): a client merging several jobs'
    archives reads them from ``files.csv``. Without the confidence column the labels load as an
    Ultralytics training set.
    """
    return ExportFile(in_chunks(_yolo_pieces(export, with_confidence)), *ZIP_FILE)


def _yolo_pieces(export: JobExport, with_confidence: bool) -> Iterator[bytes]:
    sink = ZipSink()
    classes = dict(export.classes)
    names = LabelNames()
    labels: list[str] = []
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
        for image in export.images:
            _add_classes(classes, image)
            labels.append(f"labels/{names.name_for(image.filename)}")
            archive.writestr(labels[-1], yolo_lines(image, with_confidence))
            yield sink.take()
        with archive.open("files.csv", "w") as manifest:
            manifest.write(csv_line(YOLO_MANIFEST_COLUMNS))
            for label, image in zip(labels, export.images, strict=True):
                manifest.write(
                    csv_line((label, image.filename, image.file_id, image.width, image.height, export.job_id))
                )
                yield sink.take()
        archive.writestr("data.yaml", data_yaml(export, classes))
    yield sink.take()


def csv_line(row: Iterable[Any]) -> bytes:
    text = io.StringIO()
    csv.writer(text).writerow(row)
    return text.getvalue().encode()


def csv_rows(export: JobExport) -> ExportFile:
    """One row per detection; ``width`` and ``height`` are the image's, the box is in its pixels.

    An image with nothing found still has one row, its detection columns empty (as a video's empty frame in
    ``jobs.video_exports``), so every analysed image appears and one seen empty is told apart from one never
    analysed.
    """

    def pieces() -> Iterator[bytes]:
        yield csv_line(CSV_COLUMNS)
        for image in export.images:
            seen = (export.job_id, image.file_id, image.filename)
            size = (image.width, image.height)
            for d in image.detections:
                box = (round(d.x1, 3), round(d.y1, 3), round(d.x2, 3), round(d.y2, 3))
                yield csv_line((*seen, d.cls, d.name, d.confidence, *box, *size))
            if not image.detections:
                yield csv_line((*seen, *[""] * (len(CSV_COLUMNS) - len(seen) - len(size)), *size))

    return ExportFile(in_chunks(pieces()), *CSV_FILE)


def label_studio(export: JobExport) -> ExportFile:
    """Label Studio tasks, each with one prediction of ``rectanglelabels`` in percent of the image."""
    return ExportFile(in_chunks(json_array(_label_studio_tasks(export))), *JSON_FILE)


def _label_studio_tasks(export: JobExport) -> Iterator[dict[str, Any]]:
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
        yield {"data": data, "predictions": [prediction]}


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

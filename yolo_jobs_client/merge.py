"""One file for a whole submission, merged from the server's export of each of its jobs.

The server builds every format (``GET /api/v1/jobs/<id>/export``); merging only
renumbers and concatenates: COCO image and annotation ids, CSV rows under one
header, Label Studio task lists, and YOLO label files. The server alone names the
label files (unique within a job, listed in ``files.csv``); merged, each job's
labels keep their names in a folder of the job's own, ``labels/<job_id>/``, so no
two jobs' labels meet and no name is made up here.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Any

from yolo_jobs_client.errors import UsageError


def merge_coco(parts: Sequence[bytes]) -> bytes:
    documents = [json.loads(part) for part in parts]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories: dict[int, dict[str, Any]] = {}
    for document in documents:
        new_ids = {}
        for image in document["images"]:
            new_ids[image["id"]] = len(images) + 1
            images.append({**image, "id": len(images) + 1})
        for annotation in document["annotations"]:
            annotations.append({**annotation, "id": len(annotations) + 1, "image_id": new_ids[annotation["image_id"]]})
        for category in document["categories"]:
            known = categories.setdefault(category["id"], category)
            if known["name"] != category["name"]:
                raise UsageError(f"The jobs name category {category['id']} differently; export them one by one.")
    info = {**documents[0]["info"], "job_ids": [d["info"].get("job_id") for d in documents]}
    info["description"] = f"yolo-jobs detections of {len(documents)} jobs"
    merged = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [categories[key] for key in sorted(categories)],
    }
    return json.dumps(merged, ensure_ascii=False, separators=(",", ":")).encode()


def merge_csv(parts: Sequence[bytes]) -> bytes:
    """The rows of every part under the first part's header."""
    text = io.StringIO()
    writer = csv.writer(text)
    for index, part in enumerate(parts):
        rows = csv.reader(io.StringIO(part.decode()))
        header = next(rows)
        if index == 0:
            writer.writerow(header)
        writer.writerows(rows)
    return text.getvalue().encode()


def merge_label_studio(parts: Sequence[bytes]) -> bytes:
    tasks = [task for part in parts for task in json.loads(part)]
    return json.dumps(tasks, ensure_ascii=False, separators=(",", ":")).encode()


def merge_yolo(parts: Sequence[bytes]) -> bytes:
    """The first job's ``data.yaml`` (a submission runs one model), every job's labels under
    ``labels/<job_id>/``, one ``files.csv``.

    Ultralytics finds images in sub-folders of ``images/`` and their labels in the same
    sub-folders of ``labels/``: put each image at its label's path, ``images/`` for ``labels/``.
    """
    manifest = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as merged:
        for index, part in enumerate(parts):
            with zipfile.ZipFile(io.BytesIO(part)) as archive:
                if index == 0:
                    merged.writestr("data.yaml", archive.read("data.yaml"))
                rows = csv.DictReader(io.StringIO(archive.read("files.csv").decode()))
                if writer is None:
                    writer = csv.DictWriter(manifest, rows.fieldnames or ())
                    writer.writeheader()
                for row in rows:
                    label = str(PurePosixPath("labels", row["job_id"], PurePosixPath(row["label"]).name))
                    merged.writestr(label, archive.read(row["label"]))
                    writer.writerow({**row, "label": label})
        merged.writestr("files.csv", manifest.getvalue())
    return buffer.getvalue()


MERGERS: dict[str, Callable[[Sequence[bytes]], bytes]] = {
    "coco": merge_coco,
    "yolo": merge_yolo,
    "csv": merge_csv,
    "labelstudio": merge_label_studio,
}


def merge(export_format: str, parts: Sequence[bytes]) -> bytes:
    """The exports of several jobs in ``export_format`` as one file (a single export as it is)."""
    if export_format not in MERGERS:
        raise UsageError(f"Cannot merge {export_format!r} exports; formats: {', '.join(MERGERS)}.")
    if not parts:
        raise UsageError("Nothing to merge.")
    return parts[0] if len(parts) == 1 else MERGERS[export_format](parts)

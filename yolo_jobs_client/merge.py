"""One file for a whole submission, merged from the server's export of each of its jobs.

The server builds every format (``GET /api/v1/jobs/<id>/export``); merging only
renumbers and concatenates: COCO image and annotation ids, CSV rows under one
header, Label Studio task lists, and YOLO label files, where a label name another
job already used is numbered on (``<stem>-2.txt``) and recorded in ``files.csv``.
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


def _free_name(name: str, taken: set[str]) -> str:
    path = PurePosixPath(name)
    candidate, number = name, 1
    while candidate.casefold() in taken:
        number += 1
        candidate = str(path.with_name(f"{path.stem}-{number}{path.suffix}"))
    taken.add(candidate.casefold())
    return candidate


def merge_yolo(parts: Sequence[bytes]) -> bytes:
    """The first job's ``data.yaml`` (a submission runs one model), every label, one ``files.csv``."""
    taken: set[str] = set()
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as merged:
        for index, part in enumerate(parts):
            with zipfile.ZipFile(io.BytesIO(part)) as archive:
                if index == 0:
                    merged.writestr("data.yaml", archive.read("data.yaml"))
                rows = list(csv.reader(io.StringIO(archive.read("files.csv").decode())))
                if index == 0:
                    writer.writerow(rows[0])
                for label, *rest in rows[1:]:
                    name = _free_name(label, taken)
                    merged.writestr(name, archive.read(label))
                    writer.writerow((name, *rest))
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

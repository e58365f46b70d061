"""One file for a whole submission, merged from the server's export of each of its jobs.

The server builds every format (``GET /api/v1/jobs/<id>/export``); merging only
renumbers and concatenates: COCO image and annotation ids, CSV rows under one
header, Label Studio task lists, and YOLO label files. What names the job names every
job merged: COCO's ``info`` (``job_id``, ``model`` and ``status`` comma-separated, and
``job_ids`` as a list), the comments of the YOLO ``data.yaml``. Each job is merged once,
known by the id the client fetched it by, never by what its export says (a server
older than the client writes no ``job_id`` column in a YOLO ``files.csv``). The
server alone names the label files (unique within a job, listed in ``files.csv``);
merged, each job's labels keep their names in a folder of the job's own,
``labels/<job_id>/``, so no two jobs' labels meet and no name is made up here.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from yolo_jobs_client.errors import UsageError


def merge_coco(exports: Mapping[str, bytes]) -> bytes:
    documents = [json.loads(export) for export in exports.values()]
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
    infos = [document["info"] for document in documents]
    info = {
        **infos[0],
        "description": f"yolo-jobs detections of {len(documents)} jobs",
        **{key: _every(str(each.get(key, "")) for each in infos) for key in ("model", "status") if key in infos[0]},
        "job_id": _every(exports),
        "job_ids": list(exports),
    }
    merged = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [categories[key] for key in sorted(categories)],
    }
    return json.dumps(merged, ensure_ascii=False, separators=(",", ":")).encode()


def _every(values: Iterable[str]) -> str:
    """Each distinct value once, in order, comma-separated (one value as it is): the jobs' ids, models or
    statuses in a field that holds one job's."""
    return ",".join(dict.fromkeys(values))


def merge_csv(exports: Mapping[str, bytes]) -> bytes:
    """The rows of every export under the first one's header."""
    text = io.StringIO()
    writer = csv.writer(text)
    for index, export in enumerate(exports.values()):
        rows = csv.reader(io.StringIO(export.decode()))
        header = next(rows)
        if index == 0:
            writer.writerow(header)
        writer.writerows(rows)
    return text.getvalue().encode()


def merge_label_studio(exports: Mapping[str, bytes]) -> bytes:
    tasks = [task for export in exports.values() for task in json.loads(export)]
    return json.dumps(tasks, ensure_ascii=False, separators=(",", ":")).encode()


def merge_yolo(exports: Mapping[str, bytes]) -> bytes:
    """The first job's ``data.yaml`` (a submission runs one model) under comments of the merge
    (:func:`merged_data_yaml`), every job's labels under ``labels/<job_id>/``, one ``files.csv``
    whose ``job_id`` column names each label's job.

    Ultralytics finds images in sub-folders of ``images/`` and their labels in the same
    sub-folders of ``labels/``: put each image at its label's path, ``images/`` for ``labels/``.
    """
    manifest = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    data_yamls: list[str] = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as merged:
        for job_id, export in exports.items():
            with zipfile.ZipFile(io.BytesIO(export)) as archive:
                rows = csv.DictReader(io.StringIO(archive.read("files.csv").decode()))
                data_yamls.append(archive.read("data.yaml").decode())
                if writer is None:
                    writer = csv.DictWriter(manifest, list(dict.fromkeys([*(rows.fieldnames or ()), "job_id"])))
                    writer.writeheader()
                for row in rows:
                    label = str(PurePosixPath("labels", job_id, PurePosixPath(row["label"]).name))
                    merged.writestr(label, archive.read(row["label"]))
                    writer.writerow({**row, "label": label, "job_id": job_id})
        merged.writestr("files.csv", manifest.getvalue())
        merged.writestr("data.yaml", merged_data_yaml(data_yamls))
    return buffer.getvalue()


def merged_data_yaml(data_yamls: Sequence[str]) -> str:
    """The first job's dataset (``nc``, ``names``, ``train``/``val``) under comments of the merge: where its
    labels and images go, and the comment line each job's own ``data.yaml`` begins with, which names the job
    and its model (the layout each job's other comments describe is no longer the merged one's)."""
    header = [
        f"# yolo-jobs: the labels of {len(data_yamls)} jobs, each job's in labels/<job_id>/<image stem>.txt",
        "# files.csv maps each label to its image and job; put each image at its label's path, images/ for labels/",
    ]
    named = [text.splitlines()[0] for text in data_yamls if text.startswith("#")]
    dataset = [line for line in data_yamls[0].splitlines() if not line.startswith("#")]
    return "\n".join([*header, *named, *dataset]) + "\n"


# Each merges the exports of two or more jobs, keyed by job id in the order they go in.
MERGERS: dict[str, Callable[[Mapping[str, bytes]], bytes]] = {
    "coco": merge_coco,
    "yolo": merge_yolo,
    "csv": merge_csv,
    "labelstudio": merge_label_studio,
}


def merge(export_format: str, job_ids: Iterable[str], export: Callable[[str], bytes]) -> bytes:
    """The ``export_format`` exports of ``job_ids`` as one file (a single job's export as it is, in any format the
    server makes: a video's MOT or CVAT file too).

    ``export`` fetches one job's export; a job named twice is fetched and merged once,
    where it first appears.
    """
    unique = list(dict.fromkeys(job_ids))
    if not unique:
        raise UsageError("Nothing to merge.")
    if len(unique) > 1 and export_format not in MERGERS:
        raise UsageError(f"Cannot merge {export_format!r} exports; formats: {', '.join(MERGERS)}.")
    exports = {job_id: export(job_id) for job_id in unique}
    return next(iter(exports.values())) if len(exports) == 1 else MERGERS[export_format](exports)

"""/api/v1/jobs/<job_id>/export/<format>: each export format as an operation of its own, with its one content type.

``GET …/export?format=`` answers JSON, a zip, CSV, text or XML by its query, but a client generated from the
document (openapi-python-client) reads every answer of an operation by the first content type it declares that
the generator knows, not by the answer's own Content-Type: it would parse CSV as JSON, or a zip as text. So each
format is also an operation that declares what it answers, and the generated client parses COCO and Label Studio
into models, reads CSV and MOT as text, and hands a zip or XML over as bytes. The answers are those of the query
form (:func:`app.api.exports.export_response`), which stays for curl, the CLI and the web page.
"""

from __future__ import annotations

from flask import Response

from app.api import bp
from app.api.exports import export_response
from app.api.schemas import (
    ATTACHMENT,
    CocoExport,
    ErrorBody,
    ExportOptions,
    JobPath,
    LabelStudioTasks,
    YoloOptions,
    binary,
    text,
)
from jobs.exports import CSV_FILE, ZIP_FILE
from jobs.video_exports import MOT_FILE, XML_FILE

ERROR_RESPONSES = {404: ErrorBody, 409: ErrorBody}
YOLO_ZIP = binary("A zip of YOLO labels, `data.yaml` and `files.csv`.", ZIP_FILE[0], headers=ATTACHMENT)
CSV = text("One row per detection, with a header row.", CSV_FILE[0], headers=ATTACHMENT)
MOT = text("MOT Challenge lines: frame, track, box, score.", MOT_FILE[0], headers=ATTACHMENT)
CVAT_XML = binary("CVAT for video 1.1 XML.", XML_FILE[0], headers=ATTACHMENT)


@bp.get("/jobs/<uuid:job_id>/export/coco", responses={200: CocoExport, **ERROR_RESPONSES})
def export_coco(path: JobPath, query: ExportOptions) -> Response:
    """A finished job's detections as COCO JSON.

    Category ids are the model's class indexes plus one. For a job with videos, one video's (`file_id`, else the
    first), with an image per sampled frame and TAO's video fields.
    """
    return export_response(path.job_id, "coco", query)


@bp.get("/jobs/<uuid:job_id>/export/yolo", responses={200: YOLO_ZIP, **ERROR_RESPONSES})
def export_yolo(path: JobPath, query: YoloOptions) -> Response:
    """A finished job's detections as a zip of YOLO labels.

    One Ultralytics label file per image under labels/, a data.yaml naming the classes, and files.csv mapping each
    label file to its image.
    """
    return export_response(path.job_id, "yolo", query, query.confidence)


@bp.get("/jobs/<uuid:job_id>/export/csv", responses={200: CSV, **ERROR_RESPONSES})
def export_csv(path: JobPath, query: ExportOptions) -> Response:
    """A finished job's detections as CSV, one row per box.

    For a job with videos, one video's (`file_id`, else the first), a row per box of each sampled frame.
    """
    return export_response(path.job_id, "csv", query)


@bp.get("/jobs/<uuid:job_id>/export/labelstudio", responses={200: LabelStudioTasks, **ERROR_RESPONSES})
def export_labelstudio(path: JobPath, query: ExportOptions) -> Response:
    """A finished job's detections as Label Studio tasks.

    One task per analysed image, with one prediction of `rectanglelabels` in percent of the image, for the
    Object Detection with Bounding Boxes template.
    """
    return export_response(path.job_id, "labelstudio", query)


@bp.get("/jobs/<uuid:job_id>/export/mot", responses={200: MOT, **ERROR_RESPONSES})
def export_mot(path: JobPath, query: ExportOptions) -> Response:
    """A video job's tracks as MOT Challenge text.

    One video's (`file_id`, else the first), from a job run with `track=true` (else 400 `not_tracked`).
    """
    return export_response(path.job_id, "mot", query)


@bp.get("/jobs/<uuid:job_id>/export/cvat-video", responses={200: CVAT_XML, **ERROR_RESPONSES})
def export_cvat_video(path: JobPath, query: ExportOptions) -> Response:
    """A video job's detections as CVAT for video XML.

    One video's (`file_id`, else the first): a track of boxes per track id, and each untracked box alone.
    """
    return export_response(path.job_id, "cvat-video", query)

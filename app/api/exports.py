"""/api/v1/jobs/<job_id>/export: a finished job's detections as COCO, YOLO labels, CSV or Label Studio tasks.

The formats are built by :mod:`jobs.exports`. A queued or running job answers 409
``not_finished`` (with Retry-After); a failed or cancelled one answers 409
``not_succeeded`` unless ``partial=true`` asks for the images it did analyse.
"""

from __future__ import annotations

import uuid

from flask import Response, request, url_for

from app.api import bp
from app.auth import tenant_scope
from app.errors import RETRY_AFTER_SECONDS, ApiError
from app.extensions import db_session, get_job_service
from jobs.catalog import model_classes
from jobs.exports import FORMATS, build, job_export

FLAGS = {"true": True, "1": True, "false": False, "0": False}


def _flag(name: str) -> bool:
    raw = request.args.get(name, "false").strip().lower()
    if raw not in FLAGS:
        raise ApiError(400, "invalid_parameter", f"{name} must be true or false.")
    return FLAGS[raw]


@bp.get("/jobs/<uuid:job_id>/export")
def export_job(job_id: uuid.UUID) -> Response:
    export_format = request.args.get("format", "")
    if export_format not in FORMATS:
        raise ApiError(400, "invalid_parameter", f"format must be one of: {', '.join(FORMATS)}.")
    partial, with_confidence = _flag("partial"), _flag("confidence")
    session = db_session()
    job = get_job_service().find(session, job_id, tenant_scope())
    if not job.is_finished:
        message = f"The job is {job.status}; export it once it has finished."
        raise ApiError(409, "not_finished", message, RETRY_AFTER_SECONDS)
    if job.status != "succeeded" and not partial:
        message = f"The job ended {job.status}; ask for partial=true to export the images it analysed."
        raise ApiError(409, "not_succeeded", message)
    export = job_export(
        job,
        model_classes(session, job.model),
        lambda file_id: url_for("api.file_content", file_id=file_id, _external=True),
    )
    exported = build(export, export_format, with_confidence)
    response = Response(exported.content, mimetype=exported.media_type)
    response.headers.set(
        "Content-Disposition", "attachment", filename=f"job-{job_id}-{export_format}.{exported.extension}"
    )
    return response

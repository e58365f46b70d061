"""/api/v1/jobs/<job_id>/files/<file_id>/annotated: one of a job's images with its detections drawn.

Drawn with Pillow in the API process (no torch). A JPEG comes back as JPEG, any
other format as PNG. Errors: 404 for an unknown job or a file that is not in the
job; 409 while the file has no result (``not_ready``, with Retry-After) or when the
job ended without one (``no_result``); 410 when retention deleted the bytes; 413
for images too large to draw here; 422 when the image cannot be decoded.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from flask import Response

from app.annotate import MAX_ANNOTATE_PIXELS, CannotAnnotate, annotated_image, boxes
from app.api import bp
from app.api.files import download_name
from app.api.jobs import job_service, parse_uuid
from app.errors import RETRY_AFTER_SECONDS, ApiError
from app.store import get_storage
from storage.models import Job, Result, Upload

CACHE_SECONDS = 300


def _upload_with_result(job: Job, file_id: str) -> tuple[Upload, Result]:
    wanted = parse_uuid(file_id, "file")
    upload = next((u for u in job.uploads if u.file_id == wanted), None)
    if upload is None:
        raise ApiError(404, "not_found", "This job has no file with this id.")
    if upload.result is None and job.is_finished:
        raise ApiError(409, "no_result", "The job ended without a result for this file.")
    if upload.result is None:
        message = "This file has no result yet; try again when the job has finished."
        raise ApiError(409, "not_ready", message, RETRY_AFTER_SECONDS)
    if upload.result.error:
        raise ApiError(422, "undecodable", f"{upload.filename}: {upload.result.error}.")
    return upload, upload.result


@bp.get("/jobs/<job_id>/files/<file_id>/annotated")
def annotated_file(job_id: str, file_id: str) -> Response:
    upload, result = _upload_with_result(job_service().get(parse_uuid(job_id, "job")), file_id)
    file = upload.file
    blobs = get_storage().blobs
    if file.deleted_at is not None or not blobs.exists(file.path):
        raise ApiError(410, "gone", "This file's bytes were deleted by the retention policy.")
    if file.width * file.height > MAX_ANNOTATE_PIXELS:
        message = f"{upload.filename} has too many pixels to draw on here; draw the boxes from the job's JSON instead."
        raise ApiError(413, "image_too_large", message)
    try:
        data, mimetype = annotated_image(blobs.path_of(file.path), boxes(result.detections))
    except CannotAnnotate as exc:
        raise ApiError(422, "undecodable", f"{upload.filename}: {exc}.") from None
    response = Response(data, mimetype=mimetype)
    stem = Path(download_name(upload.filename, file)).stem
    response.headers.set(
        "Content-Disposition", "inline", filename=f"{stem}-annotated{mimetypes.guess_extension(mimetype)}"
    )
    response.cache_control.private = True
    response.cache_control.max_age = CACHE_SECONDS
    return response

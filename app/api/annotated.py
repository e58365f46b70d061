"""/api/v1/jobs/<job_id>/files/<file_id>/annotated: one of a job's images with its detections drawn;
``…/thumbnail``: the image reduced to at most :data:`THUMBNAIL_SIDE` pixels (JPEG), for the job page's grid.

Drawn with Pillow in the API process (no torch). A JPEG comes back as JPEG, any
other format as PNG; an image over ``MAX_SIDE`` (3072) pixels on its longest side
comes back reduced by 2, 4, 8… (decoded reduced: :mod:`app.reduced_decode`).
Errors: 404 for an unknown job or a file that is not in the job; 409 while the file
has no result (``not_ready``, with Retry-After) or when the job ended without one
(``no_result``); 410 when retention deleted the bytes; 413 for an image too large to
decode here (no reduced decode for its format); 422 when the image cannot be
decoded; 503 ``busy`` (with Retry-After) while this process already draws
:data:`RENDERS_PER_PROCESS` images and none finished within :data:`RENDER_WAIT_SECONDS`.

Memory: one render holds tens of megabytes (a reduced image, a band of a PNG, or a
whole decode of at most ``MAX_FULL_DECODE_PIXELS``), so the renders a process runs at
once, annotated views and thumbnails together, bound what they can take from the API.
A thumbnail needs no result (it shows the image as uploaded), and is cached by the
browser for a day: a file's bytes never change.
"""

from __future__ import annotations

import mimetypes
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Response

from app.annotate import CannotAnnotate, ImageTooLargeToDraw, annotated_image, boxes, thumbnail_image
from app.api import bp
from app.api.files import download_name
from app.api.schemas import ErrorBody, JobFilePath, binary, header
from app.auth import tenant_scope
from app.errors import RETRY_AFTER_SECONDS, ApiError
from app.extensions import db_session, get_job_service, get_storage
from storage.tables import Job, Result, Upload

CACHE_SECONDS = 300
THUMBNAIL_CACHE_SECONDS = 24 * 3600
THUMBNAIL_SIDE = 320
THUMBNAIL_QUALITY = 80
RENDERS_PER_PROCESS = 2
RENDER_WAIT_SECONDS = 3
_renders = threading.BoundedSemaphore(RENDERS_PER_PROCESS)


@contextmanager
def render_slot() -> Iterator[None]:
    """One of this process's :data:`RENDERS_PER_PROCESS` renders; 503 ``busy`` when none frees up in time."""
    if not _renders.acquire(timeout=RENDER_WAIT_SECONDS):
        message = "Too many images are being drawn right now; try again shortly."
        raise ApiError(503, "busy", message, RETRY_AFTER_SECONDS)
    try:
        yield
    finally:
        _renders.release()


def _stored_path(upload: Upload) -> Path:
    """Where the upload's bytes are; 410 once retention deleted them."""
    blobs = get_storage().blobs
    if upload.file.deleted_at is not None or not blobs.exists(upload.file.path):
        raise ApiError(410, "gone", "This file's bytes were deleted by the retention policy.")
    return blobs.path_of(upload.file.path)


def _job_upload(job_id: uuid.UUID, file_id: uuid.UUID) -> tuple[Job, Upload]:
    """The tenant's job and its upload of the file (one row read, however big the job); 404 for either missing."""
    job, upload = get_job_service().find_upload(db_session(), job_id, file_id, tenant_scope())
    if upload is None:
        raise ApiError(404, "not_found", "This job has no file with this id.")
    return job, upload


def _upload_with_result(job_id: uuid.UUID, file_id: uuid.UUID) -> tuple[Upload, Result]:
    job, upload = _job_upload(job_id, file_id)
    if upload.result is None and job.is_finished:
        raise ApiError(409, "no_result", "The job ended without a result for this file.")
    if upload.result is None:
        message = "This file has no result yet; try again when the job has finished."
        raise ApiError(409, "not_ready", message, RETRY_AFTER_SECONDS)
    if upload.result.error:
        raise ApiError(422, "undecodable", f"{upload.filename}: {upload.result.error}.")
    return upload, upload.result


ANNOTATED = binary(
    "The image with its boxes drawn: JPEG stays JPEG, any other format comes back as PNG.",
    "image/jpeg",
    "image/png",
    headers=header("Content-Disposition", "`inline`, named `<name>-annotated.<ext>`."),
)
THUMBNAIL = binary(f"The image reduced to fit {THUMBNAIL_SIDE} px, as JPEG.", "image/jpeg")


@bp.get(
    "/jobs/<uuid:job_id>/files/<uuid:file_id>/annotated",
    responses={200: ANNOTATED, 404: ErrorBody, 409: ErrorBody, 410: ErrorBody, 413: ErrorBody, 422: ErrorBody},
)
def annotated_file(path: JobFilePath) -> Response:
    """One of a job's images with its detections drawn.

    An image over 3072 px on its longest side comes back reduced by 2, 4, 8…. 409
    `not_ready` (with Retry-After) before its result exists, `no_result` when the job
    ended without one; 410 `gone` after retention; 413 `image_too_large`; 422
    `undecodable`; 503 `busy` (with Retry-After) while this process draws 2 images.
    """
    upload, result = _upload_with_result(path.job_id, path.file_id)
    stored = _stored_path(upload)
    try:
        with render_slot():
            data, mimetype = annotated_image(stored, boxes(result.detections))
    except ImageTooLargeToDraw:
        message = f"{upload.filename} has too many pixels to draw on here; draw the boxes from the job's JSON instead."
        raise ApiError(413, "image_too_large", message) from None
    except CannotAnnotate as exc:
        raise ApiError(422, "undecodable", f"{upload.filename}: {exc}.") from None
    response = Response(data, mimetype=mimetype)
    stem = Path(download_name(upload.filename, upload.file)).stem
    response.headers.set(
        "Content-Disposition", "inline", filename=f"{stem}-annotated{mimetypes.guess_extension(mimetype)}"
    )
    response.cache_control.private = True
    response.cache_control.max_age = CACHE_SECONDS
    return response


@bp.get(
    "/jobs/<uuid:job_id>/files/<uuid:file_id>/thumbnail",
    responses={200: THUMBNAIL, 404: ErrorBody, 410: ErrorBody, 413: ErrorBody, 422: ErrorBody},
)
def thumbnail(path: JobFilePath) -> Response:
    """One of a job's images reduced for a grid (no result needed): 410 `gone` after retention; 413
    `image_too_large`; 422 `undecodable`; 503 `busy` (with Retry-After) while this process draws 2 images."""
    _, upload = _job_upload(path.job_id, path.file_id)
    stored = _stored_path(upload)
    try:
        with render_slot():
            data = thumbnail_image(stored, THUMBNAIL_SIDE, THUMBNAIL_QUALITY)
    except ImageTooLargeToDraw:
        raise ApiError(413, "image_too_large", f"{upload.filename} has too many pixels to reduce here.") from None
    except CannotAnnotate as exc:
        raise ApiError(422, "undecodable", f"{upload.filename}: {exc}.") from None
    response = Response(data, mimetype="image/jpeg")
    response.cache_control.private = True
    response.cache_control.max_age = THUMBNAIL_CACHE_SECONDS
    return response

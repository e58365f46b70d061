"""/api/v1/jobs/<job_id>/files/<file_id>/annotated: one of a job's images with its detections drawn;
``…/thumbnail``: the image reduced to at most :data:`THUMBNAIL_SIDE` pixels (JPEG), for the job page's grid;
/api/v1/jobs/<job_id>/annotated: a zip of all of a finished job's images drawn so, with ``files.csv``.

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

The zip is made as it is sent: the job's files are read :data:`ZIP_PAGE` at a time, each
image drawn in a render slot of its own and written to the archive, whose bytes go out at once (zipfile writes
to a stream it cannot seek). So a job of 10,000 images costs one render and a line of
``files.csv`` per image, never the archive. The images are stored, not deflated: JPEG
and PNG are compressed already. ``files.csv`` lists every file of the job, with its
entry or why it has none (not analysed, undecodable, deleted, too large to draw). Like
the exports, a running job answers 409 ``not_finished`` and a failed or cancelled one
``not_succeeded`` unless ``partial=true``.

Zips draw one image at a time in a process, whatever their number (:data:`_zip_renders`), so a render slot
always stays for the thumbnails and annotated views people wait on: two zips of 10,000 images would otherwise
hold both slots for minutes and every thumbnail would answer 503. A zip waits for its turn (and then for a slot)
as long as it takes rather than failing: its answer has begun. Kept simple on purpose: zips share one slot,
first come first served, however many there are; a zip that waits only comes out slower.
"""

from __future__ import annotations

import mimetypes
import threading
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath

from flask import Response, stream_with_context
from sqlalchemy.orm import Session

from app.annotate import CannotAnnotate, ImageTooLargeToDraw, annotated_image, boxes, thumbnail_image
from app.api import bp
from app.api.exports import check_exportable
from app.api.files import download_name
from app.api.schemas import AnnotatedQuery, ErrorBody, JobFilePath, JobPath, binary, header
from app.auth import tenant_scope
from app.errors import RETRY_AFTER_SECONDS, ApiError
from app.extensions import db_session, get_job_service, get_storage
from jobs.exports import LabelNames, ZipSink, csv_line
from storage.tables import Job, Result, Upload

CACHE_SECONDS = 300
THUMBNAIL_CACHE_SECONDS = 24 * 3600
THUMBNAIL_SIDE = 320
THUMBNAIL_QUALITY = 80
RENDERS_PER_PROCESS = 2
RENDER_WAIT_SECONDS = 3
_renders = threading.BoundedSemaphore(RENDERS_PER_PROCESS)
# The zips' one turn at drawing: a zip's image takes it, then a render slot, so zips never hold every slot.
_zip_renders = threading.BoundedSemaphore(1)
# A zip's files are read this many at a time.
ZIP_PAGE = 100
ZIP_MANIFEST = "files.csv"
ZIP_MANIFEST_COLUMNS = ("image", "filename", "file_id", "objects", "note")


@contextmanager
def render_slot(wait: float | None = RENDER_WAIT_SECONDS) -> Iterator[None]:
    """One of this process's :data:`RENDERS_PER_PROCESS` renders; 503 ``busy`` when none frees up within ``wait``
    seconds (None: wait as long as it takes)."""
    if not _renders.acquire(timeout=wait):
        message = "Too many images are being drawn right now; try again shortly."
        raise ApiError(503, "busy", message, RETRY_AFTER_SECONDS)
    try:
        yield
    finally:
        _renders.release()


def _kept_path(upload: Upload) -> Path | None:
    """Where the upload's bytes are; None once retention deleted them."""
    blobs = get_storage().blobs
    if upload.file.deleted_at is not None or not blobs.exists(upload.file.path):
        return None
    return blobs.path_of(upload.file.path)


def _stored_path(upload: Upload) -> Path:
    """Where the upload's bytes are; 410 once retention deleted them."""
    path = _kept_path(upload)
    if path is None:
        raise ApiError(410, "gone", "This file's bytes were deleted by the retention policy.")
    return path


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
    """One of a job's images reduced for a grid, as JPEG (no result needed).

    410 `gone` after retention; 413 `image_too_large`; 422 `undecodable`; 503 `busy` (with Retry-After) while
    this process draws 2 images.
    """
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


ANNOTATED_ZIP = binary(
    f"The analysed images with their boxes drawn (JPEG stays JPEG, any other format is PNG) and {ZIP_MANIFEST}.",
    "application/zip",
    headers=header("Content-Disposition", "`attachment`, named `job-<job_id>-annotated.zip`."),
)


@bp.get("/jobs/<uuid:job_id>/annotated", responses={200: ANNOTATED_ZIP, 404: ErrorBody, 409: ErrorBody})
def annotated_zip(path: JobPath, query: AnnotatedQuery) -> Response:
    """A finished job's analysed images with their boxes drawn, as a zip.

    The zip is made while it is sent, with files.csv listing every file of the job and its image in the zip, or
    why it has none. 409 not_finished (with Retry-After) while the job runs; 409 not_succeeded for a failed or
    cancelled job unless partial=true.
    """
    session, tenant = db_session(), tenant_scope()
    first = get_job_service().find_page(session, path.job_id, tenant, ZIP_PAGE, 0)
    job = first.job
    check_exportable(job, query.partial)

    def uploads() -> Iterator[Upload]:
        page, offset = first.uploads, 0
        while page:
            yield from page
            offset += ZIP_PAGE
            page = get_job_service().find_page(session, job.id, tenant, ZIP_PAGE, offset).uploads

    response = Response(stream_with_context(_zip_chunks(uploads(), session)), mimetype="application/zip")
    response.headers.set("Content-Disposition", "attachment", filename=f"job-{job.id}-annotated.zip")
    return response


def _zip_chunks(uploads: Iterable[Upload], session: Session) -> Iterator[bytes]:
    """The zip's bytes, an image at a time, then the request's session closed (the request's teardown may come
    before the last page is read)."""
    sink, names, manifest = ZipSink(), LabelNames(), [csv_line(ZIP_MANIFEST_COLUMNS)]
    try:
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as archive:
            for upload in uploads:
                drawn = _drawn(upload)
                if isinstance(drawn, str):
                    entry, note = "", drawn
                else:
                    data, mimetype = drawn
                    stem = PurePath(names.name_for(download_name(upload.filename, upload.file))).stem
                    entry, note = f"{stem}{mimetypes.guess_extension(mimetype)}", ""
                    archive.writestr(entry, data)
                    yield sink.take()
                found = len(upload.result.detections) if upload.result is not None else ""
                manifest.append(csv_line((entry, upload.filename, upload.file_id or "", found, note)))
            archive.writestr(ZIP_MANIFEST, b"".join(manifest), zipfile.ZIP_DEFLATED)
        yield sink.take()
    finally:
        session.close()


def _drawn(upload: Upload) -> tuple[bytes, str] | str:
    """The upload's image with its boxes drawn and its content type, or why it has none (a sentence)."""
    result = upload.result
    if upload.file is None:
        return "deleted by its owner"
    if result is None:
        return "not analysed: the job ended first"
    if result.error:
        return f"could not be processed: {result.error}"
    if upload.file.media:
        return "a video: its boxes are in the job's video exports"
    stored = _kept_path(upload)
    if stored is None:
        return "deleted by the retention policy"
    try:
        with _zip_renders, render_slot(wait=None):
            return annotated_image(stored, boxes(result.detections))
    except ImageTooLargeToDraw:
        return "too many pixels to draw on here"
    except CannotAnnotate as exc:
        return str(exc)

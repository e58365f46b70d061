"""/api/v1/jobs/<job_id>/export: a finished job's detections as COCO, YOLO labels, CSV or Label Studio tasks;
a video job's as MOT Challenge tracks, CVAT for video XML, COCO (an image per sampled frame) or CSV.

The formats are built by :mod:`jobs.exports` and :mod:`jobs.video_exports` and streamed as they are made, the
job's rows read a page at a time, so a job of 10,000 files or a video of 216,000 frames costs bounded memory.
A job with videos exports one video at a time (``file_id``, else its first). A queued or running job answers 409
``not_finished`` (with Retry-After); a failed or cancelled one answers 409
``not_succeeded`` unless ``partial=true`` asks for the images it did analyse.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import PurePath

from flask import Response, stream_with_context
from sqlalchemy.orm import Session
from werkzeug.utils import secure_filename

from app.api import bp
from app.api.schemas import ErrorBody, ExportOptions, ExportQuery, JobPath, binary
from app.api.signed_files import export_image_urls
from app.auth import tenant_scope
from app.errors import RETRY_AFTER_SECONDS, ApiError
from app.extensions import db_session, get_job_service
from jobs.catalog import model_classes
from jobs.exports import MEDIA_TYPES, ExportFile, build, job_export
from jobs.frames import stream_frames
from jobs.video_exports import VIDEO_FORMATS, VIDEO_MEDIA_TYPES, VideoExport
from storage.tables import Job, Upload


def _closing(chunks: Iterable[bytes], session: Session) -> Iterator[bytes]:
    """The chunks, then the request's session closed: the request's own teardown may run before the last page
    is read, and a session used after its close would open a connection nothing returns."""
    try:
        yield from chunks
    finally:
        session.close()


EXPORTED = binary("The export, as an attachment.", *dict.fromkeys((*MEDIA_TYPES, *VIDEO_MEDIA_TYPES)))
# Formats that only a video's frames have.
VIDEO_ONLY = tuple(name for name in VIDEO_FORMATS if name not in ("coco", "csv"))


@bp.get("/jobs/<uuid:job_id>/export", responses={200: EXPORTED, 404: ErrorBody, 409: ErrorBody})
def export_job(path: JobPath, query: ExportQuery) -> Response:
    """A finished job's detections as one file, in any of the export formats.

    COCO JSON, a YOLO labels zip, CSV or Label Studio tasks; for a job with videos, one video's (`file_id`, else
    the first) as MOT (`track=true` jobs), CVAT for video XML, COCO with an image per sampled frame, or CSV. The
    answer's Content-Type tells which. Each format also has an operation of its own (/export/coco, /export/csv…)
    that declares its one content type, by which a generated client reads the answer.
    """
    return export_response(path.job_id, query.format, query, query.confidence)


def check_exportable(job: Job, partial: bool) -> None:
    """What every download of a job's results answers before it starts: 409 ``not_finished`` (with Retry-After)
    while the job runs, 409 ``not_succeeded`` for a failed or cancelled job unless ``partial`` asks for what it
    analysed."""
    if not job.is_finished:
        message = f"The job is {job.status}; download it once it has finished."
        raise ApiError(409, "not_finished", message, RETRY_AFTER_SECONDS)
    if job.status != "succeeded" and not partial:
        message = f"The job ended {job.status}; ask for partial=true (the CLI's --partial) for what it analysed."
        raise ApiError(409, "not_succeeded", message)


def export_response(
    job_id: uuid.UUID, export_format: str, options: ExportOptions, with_confidence: bool = False
) -> Response:
    """The job's detections in ``export_format``, as an attachment: what :func:`export_job` and each format's own
    operation (:mod:`app.api.export_formats`) answer."""
    session = db_session()
    service = get_job_service()
    job, video = service.video_source(session, job_id, tenant_scope(), options.file_id)
    check_exportable(job, options.partial)
    if video is not None:
        exported, name = _video_export(session, job, video, export_format)
    elif options.file_id is not None or export_format in VIDEO_ONLY:
        raise ApiError(400, "not_a_video", f"The job has no such video to export as {export_format}.")
    else:
        _, uploads = service.export_source(session, job_id, tenant_scope())
        export = job_export(
            job,
            model_classes(session, job.model),
            export_image_urls(job.tenant_id),
            uploads,
        )
        exported, name = build(export, export_format, with_confidence), f"job-{job_id}-{export_format}"
    response = Response(stream_with_context(_closing(exported.chunks, session)), mimetype=exported.media_type)
    response.headers.set("Content-Disposition", "attachment", filename=f"{name}.{exported.extension}")
    return response


def _video_export(session: Session, job: Job, upload: Upload, export_format: str) -> tuple[ExportFile, str]:
    """One of the job's videos in ``export_format``, its frames read a page at a time; and its file's name."""
    if export_format not in VIDEO_FORMATS:
        formats = ", ".join(VIDEO_FORMATS)
        raise ApiError(400, "not_a_video_format", f"A video exports as one of {formats}, not {export_format}.")
    if export_format == "mot" and not job.track:
        raise ApiError(400, "not_tracked", "MOT needs track ids: run the job with track=true.")
    file = upload.file
    assert file is not None and file.media is not None
    export = VideoExport(
        job_id=str(job.id),
        upload_id=str(upload.id),
        filename=upload.filename,
        width=file.width or file.media["width"],
        height=file.height or file.media["height"],
        fps=file.media["fps"],
        sampled_fps=job.sample_fps,
        frames_total=job.total_frames or 0,
        names=model_classes(session, job.model),
        rows=lambda: stream_frames(session, upload.id),
    )
    stem = secure_filename(PurePath(upload.filename).stem) or "video"  # a header value: ASCII
    return VIDEO_FORMATS[export_format](export), f"job-{job.id}-{stem}-{export_format}"

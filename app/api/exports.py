"""/api/v1/jobs/<job_id>/export: a finished job's detections as COCO, YOLO labels, CSV or Label Studio tasks.

The formats are built by :mod:`jobs.exports` and streamed as they are made, the job's rows read a page at a
time, so a job of 10,000 files costs bounded memory. A queued or running job answers 409
``not_finished`` (with Retry-After); a failed or cancelled one answers 409
``not_succeeded`` unless ``partial=true`` asks for the images it did analyse.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from flask import Response, stream_with_context, url_for
from sqlalchemy.orm import Session

from app.api import bp
from app.api.schemas import ErrorBody, ExportQuery, JobPath, binary
from app.auth import tenant_scope
from app.errors import RETRY_AFTER_SECONDS, ApiError
from app.extensions import db_session, get_job_service
from jobs.catalog import model_classes
from jobs.exports import MEDIA_TYPES, build, job_export


def _closing(chunks: Iterable[bytes], session: Session) -> Iterator[bytes]:
    """The chunks, then the request's session closed: the request's own teardown may run before the last page
    is read, and a session used after its close would open a connection nothing returns."""
    try:
        yield from chunks
    finally:
        session.close()


EXPORTED = binary("The export, as an attachment.", *MEDIA_TYPES)


@bp.get("/jobs/<uuid:job_id>/export", responses={200: EXPORTED, 404: ErrorBody, 409: ErrorBody})
def export_job(path: JobPath, query: ExportQuery) -> Response:
    """A finished job's detections as one file: COCO JSON, a YOLO labels zip, CSV or Label Studio tasks."""
    job_id, export_format = path.job_id, query.format
    partial, with_confidence = query.partial, query.confidence
    session = db_session()
    job, uploads = get_job_service().export_source(session, job_id, tenant_scope())
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
        uploads,
    )
    exported = build(export, export_format, with_confidence)
    response = Response(stream_with_context(_closing(exported.chunks, session)), mimetype=exported.media_type)
    response.headers.set(
        "Content-Disposition", "attachment", filename=f"job-{job_id}-{export_format}.{exported.extension}"
    )
    return response

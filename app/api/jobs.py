"""/api/v1/jobs: submit a job of uploaded images, show one, list them, cancel or retry one."""

from __future__ import annotations

from flask import Response, jsonify, request, url_for

from app import job_actions
from app.api import bp
from app.api.schemas import ErrorBody, Job, JobPage, JobPath, PageQuery, Submission, SubmitForm, SubmitHeaders
from app.auth import tenant_scope
from app.extensions import db_session, get_job_service
from app.forms import status_filter
from app.quotas import limit_submissions
from app.serializers import job_json, job_summary_json

Answer = tuple[Response, int, dict[str, str]]
# The form is parsed by app.forms (shared with the web form) while the parts stream to disk: described here only.
SUBMIT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": SubmitForm.model_json_schema(),
            "encoding": {"image": {"contentType": "application/octet-stream", "style": "form", "explode": True}},
        }
    },
}


@bp.post(
    "/jobs",
    responses={
        202: Submission,
        409: ErrorBody,
        413: ErrorBody,
        415: ErrorBody,
        422: ErrorBody,
        429: ErrorBody,
        507: ErrorBody,
    },
    openapi_extensions={"requestBody": SUBMIT_BODY},
)
@limit_submissions
def submit_job(header: SubmitHeaders) -> Answer:
    """Submit a job: upload 1 to 100 images.

    Each part streams to the storage volume while it is hashed; the job is committed,
    then its task is sent. 400 `no_image`, `empty_file`, `too_many_files`,
    `invalid_parameter`, `unknown_model`; 413 `too_large`, `image_too_large`; 415
    `unsupported_media_type`; 409 `idempotency_key_in_progress`; 422
    `idempotency_key_reused`; 429 `too_many_requests`, `too_many_active_jobs`; 507
    `insufficient_storage`.
    """
    files, form = request.files.getlist("image"), request.form
    submission = job_actions.submit(files, form, header.idempotency_key)
    headers = {"Location": url_for("api.show_job", job_id=submission.job_id)}
    if submission.replayed:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(submission.answer.body), submission.answer.status_code, headers


@bp.get("/jobs/<uuid:job_id>", responses={200: Job, 404: ErrorBody})
def show_job(path: JobPath) -> Response:
    """A job: status, progress, parameters, files and results so far."""
    return jsonify(job_json(get_job_service().find(db_session(), path.job_id, tenant_scope())))


@bp.get("/jobs", responses={200: JobPage})
def index_jobs(query: PageQuery) -> Response:
    """The jobs this key's tenant can see, newest first; ``status`` keeps only jobs in those statuses."""
    limit, offset = query.limit, query.offset
    statuses = status_filter(query.status)
    jobs, total = get_job_service().page(db_session(), limit, offset, tenant_scope(), statuses)
    body = {"jobs": [job_summary_json(j) for j in jobs], "total": total, "limit": limit, "offset": offset}
    if statuses:
        body["status"] = list(statuses)
    if offset + limit < total:
        filtered = {"status": ",".join(statuses)} if statuses else {}
        body["next"] = url_for("api.index_jobs", limit=limit, offset=offset + limit, **filtered)
    return jsonify(body)


@bp.post("/jobs/<uuid:job_id>/cancel", responses={202: Job, 404: ErrorBody, 409: ErrorBody})
def cancel_job(path: JobPath) -> Answer:
    """Cancel a queued or running job (409 `already_finished` for a finished one).

    A running attempt stops at its next batch boundary.
    """
    job = job_actions.cancel(path.job_id)
    return jsonify(job_json(job)), 202, {"Location": url_for("api.show_job", job_id=job.id)}


@bp.post("/jobs/<uuid:job_id>/retry", responses={202: Job, 404: ErrorBody, 409: ErrorBody})
def retry_job(path: JobPath) -> Answer:
    """Queue a failed or cancelled job again for its files without a result (409 `not_retryable` otherwise)."""
    job = job_actions.retry(path.job_id)
    return jsonify(job_json(job)), 202, {"Location": url_for("api.show_job", job_id=job.id)}

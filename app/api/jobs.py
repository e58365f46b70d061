"""/api/v1/jobs: submit a job of uploaded images or stored files, show one, list them, cancel, retry or rerun one."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from flask import Response, jsonify, request, url_for

from app import job_actions
from app.api import bp
from app.api.schemas import (
    ErrorBody,
    Job,
    JobPage,
    JobPath,
    JobQuery,
    PageQuery,
    RerunOptions,
    Submission,
    SubmitForm,
    SubmitHeaders,
    SubmitJson,
)
from app.auth import tenant_scope
from app.extensions import db_session, get_job_service, get_settings
from app.forms import json_body_limit, read_json_fields, status_filter
from app.quotas import limit_submissions
from app.serializers import FILES_PAGE, job_json, job_summary_json
from jobs.service import Submission as NewSubmission

Answer = tuple[Response, int, dict[str, str]]
JSON = "application/json"
# The bodies are parsed by app.forms (shared with the web form) while the parts stream to disk: described here only.
SUBMIT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": SubmitForm.model_json_schema(),
            "encoding": {"image": {"contentType": "application/octet-stream", "style": "form", "explode": True}},
        },
        JSON: {"schema": SubmitJson.model_json_schema()},
    },
}
RERUN_BODY = {
    "required": False,
    "content": {
        "application/x-www-form-urlencoded": {"schema": RerunOptions.model_json_schema()},
        "multipart/form-data": {"schema": RerunOptions.model_json_schema()},
        JSON: {"schema": RerunOptions.model_json_schema()},
    },
}


def _json_fields(with_file_ids: bool) -> tuple[dict[str, str], list[str]]:
    """The request's JSON body as form fields and file ids, read within the bound for ``MAX_JOB_FILES`` ids."""
    limit = json_body_limit(get_settings().files.max_job_files)
    return read_json_fields(request.stream, request.content_length, limit, with_file_ids)


def accepted_answer(submission: NewSubmission) -> Answer:
    """The 202 of a submission (also POST /api/v1/predict's past its wait): the job, its Location, and whether
    the answer is a replay under an Idempotency-Key."""
    headers = {"Location": url_for("api.show_job", job_id=submission.job_id)}
    if submission.replayed:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(submission.answer.body), submission.answer.status_code, headers


# What refuses a submission, whichever route takes it (POST /jobs, POST /predict): the Idempotency-Key in use (409)
# or reused (422), stored files gone (410), sizes (413), media (415), the rate limit (429) and a full volume (507).
SUBMISSION_REFUSALS = dict.fromkeys((409, 410, 413, 415, 422, 429, 507), ErrorBody)


@bp.post(
    "/jobs",
    responses={202: Submission, **SUBMISSION_REFUSALS},
    openapi_extensions={"requestBody": SUBMIT_BODY},
)
@limit_submissions
def submit_job(header: SubmitHeaders) -> Answer:
    """Submit a job on uploaded images, stored files, or both.

    Upload 1 to 100 images (multipart parts named `image`), and/or name stored files by id (`file_id` fields, or
    a JSON body with `file_ids`). Each part streams to the storage volume while it is hashed; the job is committed,
    then its task is sent. A stored file is not sent again. 400 `no_image`, `empty_file`, `too_many_files`,
    `invalid_parameter`, `invalid_json`, `unknown_model`; 410 `gone`; 413 `too_large`, `image_too_large`,
    `larger_than_quota`; 415 `unsupported_media_type`; 409 `idempotency_key_in_progress`; 422
    `idempotency_key_reused`, `unknown_file`, `not_an_image`; 429 `too_many_requests`, `too_many_active_jobs`;
    507 `insufficient_storage`, `storage_quota_exceeded`.
    """
    if request.mimetype == JSON:
        form, file_ids = _json_fields(with_file_ids=True)
        submission = job_actions.submit([], form, header.idempotency_key, file_ids)
    else:
        files, form = request.files.getlist("image"), request.form
        submission = job_actions.submit(files, form, header.idempotency_key, form.getlist("file_id"))
    return accepted_answer(submission)


@bp.post(
    "/jobs/<uuid:job_id>/rerun",
    responses={
        202: Submission,
        400: ErrorBody,
        404: ErrorBody,
        409: ErrorBody,
        410: ErrorBody,
        422: ErrorBody,
        429: ErrorBody,
    },
    openapi_extensions={"requestBody": RERUN_BODY},
)
@limit_submissions
def rerun_job(path: JobPath, header: SubmitHeaders) -> Answer:
    """Run a job again on the same files, as a new job, with some of its parameters changed.

    `model`, `conf`, `iou` or `imgsz` as given, the original's for any left out; no byte is copied. Files deleted
    since are left out: 409 `no_files` when none is left; 410 `gone` when retention removed a
    file's bytes; 404 `not_found` for a job of another tenant (admins' too). An `Idempotency-Key` is honoured
    as on a submission (409 `idempotency_key_in_progress`, 422 `idempotency_key_reused`); 429 as a submission.
    """
    form: Mapping[str, str] = _json_fields(with_file_ids=False)[0] if request.mimetype == JSON else request.form
    return accepted_answer(job_actions.rerun(path.job_id, form, header.idempotency_key))


@bp.get("/jobs/<uuid:job_id>", responses={200: Job, 404: ErrorBody})
def show_job(path: JobPath, query: JobQuery) -> Response:
    """A job: its status, progress and parameters, and a page of its files with their results so far.

    The page is `files_limit` files from `files_offset`, of `files_total` in all.
    """
    return _shown(path.job_id, query.files_limit, query.files_offset)


def _shown(job_id: uuid.UUID, limit: int = FILES_PAGE, offset: int = 0) -> Response:
    """The job's JSON with a page of its files (``limit`` from ``offset``)."""
    found = get_job_service().find_page(db_session(), job_id, tenant_scope(), limit, offset)
    return jsonify(job_json(found.job, found.uploads, offset, limit, found.parts))


@bp.get("/jobs", responses={200: JobPage})
def index_jobs(query: PageQuery) -> Response:
    """The jobs this key's tenant can see, newest first.

    `status` keeps only jobs in those statuses.
    """
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
    """Cancel a queued or running job.

    A running attempt stops at its next batch boundary. 409 `already_finished` for a finished job.
    """
    job = job_actions.cancel(path.job_id)
    return _shown(job.id), 202, {"Location": url_for("api.show_job", job_id=job.id)}


@bp.post("/jobs/<uuid:job_id>/retry", responses={202: Job, 404: ErrorBody, 409: ErrorBody})
def retry_job(path: JobPath) -> Answer:
    """Queue a failed or cancelled job again, for its files without a result.

    409 `not_retryable` for a job in any other status.
    """
    job = job_actions.retry(path.job_id)
    return _shown(job.id), 202, {"Location": url_for("api.show_job", job_id=job.id)}

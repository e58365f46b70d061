"""/api/v1/jobs: submit a job of uploaded images, show one, list them, cancel or retry one."""

from __future__ import annotations

import uuid

from flask import Response, jsonify, request, url_for

from app.api import bp
from app.auth import current_principal, tenant_scope
from app.errors import ApiError
from app.extensions import db_session, get_job_service
from app.forms import page_arg, status_filter
from app.quotas import limit_submissions
from app.serializers import job_json, job_summary_json, submission_json
from jobs.idempotency import is_valid_key

Answer = tuple[Response, int, dict[str, str]]


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not is_valid_key(key):
        raise ApiError(400, "invalid_parameter", "Idempotency-Key must be 1 to 255 printable ASCII characters.")
    return key


@bp.post("/jobs")
@limit_submissions
def submit_job() -> Answer:
    key = _idempotency_key()
    files, form = request.files.getlist("image"), request.form
    service = get_job_service()
    submission = service.submit(db_session(), current_principal(), files, form, submission_json, idempotency_key=key)
    headers = {"Location": url_for("api.show_job", job_id=submission.job_id)}
    if submission.replayed:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(submission.body), submission.status_code, headers


@bp.get("/jobs/<uuid:job_id>")
def show_job(job_id: uuid.UUID) -> Response:
    return jsonify(job_json(get_job_service().find(db_session(), job_id, tenant_scope())))


@bp.get("/jobs")
def index_jobs() -> Response:
    limit = page_arg(request.args, "limit", 20, 1, 100)
    offset = page_arg(request.args, "offset", 0, 0, 10**9)
    statuses = status_filter(request.args.getlist("status"))
    jobs, total = get_job_service().page(db_session(), limit, offset, tenant_scope(), statuses)
    body = {"jobs": [job_summary_json(j) for j in jobs], "total": total, "limit": limit, "offset": offset}
    if statuses:
        body["status"] = list(statuses)
    if offset + limit < total:
        filtered = {"status": ",".join(statuses)} if statuses else {}
        body["next"] = url_for("api.index_jobs", limit=limit, offset=offset + limit, **filtered)
    return jsonify(body)


@bp.post("/jobs/<uuid:job_id>/cancel")
def cancel_job(job_id: uuid.UUID) -> Answer:
    job = get_job_service().cancel(db_session(), job_id, tenant_scope())
    return jsonify(job_json(job)), 202, {"Location": url_for("api.show_job", job_id=job.id)}


@bp.post("/jobs/<uuid:job_id>/retry")
def retry_job(job_id: uuid.UUID) -> Answer:
    job = get_job_service().retry(db_session(), job_id, tenant_scope())
    return jsonify(job_json(job)), 202, {"Location": url_for("api.show_job", job_id=job.id)}

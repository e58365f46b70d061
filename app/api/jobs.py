"""/api/v1/jobs: create a job from uploaded images, read one, list them."""

from __future__ import annotations

import uuid

from flask import Response, current_app, jsonify, request, url_for

from app.api import bp
from app.errors import ApiError
from app.job_service import JobService, whole_number
from app.serializers import job_json, job_summary_json


def job_service() -> JobService:
    return current_app.extensions["yolo_job_service"]


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApiError(404, "not_found", f"No {what} with this id.") from None


def _page_arg(name: str, default: int, low: int, high: int) -> int:
    return whole_number(request.args.get(name, str(default)), name, low, high)


@bp.post("/jobs")
def create_job() -> tuple[Response, int, dict[str, str]]:
    job = job_service().create(request.files.getlist("image"), request.form)
    body = {"job_id": str(job.id), "status": job.status, "files": job_json(job)["files"]}
    return jsonify(body), 202, {"Location": url_for("api.get_job", job_id=job.id)}


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    return jsonify(job_json(job_service().get(parse_uuid(job_id, "job"))))


@bp.get("/jobs")
def list_jobs() -> Response:
    limit = _page_arg("limit", 20, 1, 100)
    offset = _page_arg("offset", 0, 0, 10**9)
    jobs, total = job_service().list(limit, offset)
    body = {"jobs": [job_summary_json(j) for j in jobs], "total": total, "limit": limit, "offset": offset}
    if offset + limit < total:
        body["next"] = url_for("api.list_jobs", limit=limit, offset=offset + limit)
    return jsonify(body)

"""``/jobs``: the recent jobs (``?status=`` one or several, as in the API); ``/jobs/<job_id>``: a job's
progress, then its images with boxes and detections, with Cancel and Retry buttons (plain form posts with
CSRF tokens, so they work without JavaScript)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Response, redirect, render_template, request, url_for
from sqlalchemy.orm import Session

from app.annotate import Box, boxes
from app.auth import tenant_scope
from app.errors import ApiError
from app.extensions import db_session, get_job_service
from app.forms import status_filter
from app.web import bp
from storage.tables import JOB_STATUSES, Upload

JOBS_PER_PAGE = 25
MAX_PAGE = 100_000
NAMES_PER_JOB = 3

JobAction = Response | tuple[str, int]


@dataclass(frozen=True)
class FileView:
    """One upload as the job page shows it: its size in pixels and the boxes found in it."""

    upload: Upload
    width: int
    height: int
    boxes: list[Box]

    @classmethod
    def of(cls, upload: Upload) -> FileView:
        result = upload.result
        width = result.width if result and result.width else upload.file.width
        height = result.height if result and result.height else upload.file.height
        return cls(upload, width, height, boxes(result.detections) if result else [])

    @property
    def font_size(self) -> float:
        """Label size in image pixels, so labels keep their share of the picture at any display size."""
        return round(max(14.0, max(self.width, self.height) / 28), 1)


@bp.app_template_filter("when")
def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


@bp.get("/jobs/<uuid:job_id>")
def job_page(job_id: uuid.UUID) -> str:
    return _render_job(job_id)


@bp.get("/jobs/<path:anything>")
def no_such_job(anything: str) -> str:
    """A job URL whose id is not a job id: the same sentence as for an unknown job."""
    raise ApiError(404, "not_found", "No job with this id.")


def _render_job(job_id: uuid.UUID, error: str | None = None) -> str:
    job = get_job_service().find(db_session(), job_id, tenant_scope())
    return render_template("job.html", job=job, files=[FileView.of(u) for u in job.uploads], error=error)


def _act(job_id: uuid.UUID, action: Callable[[Session, uuid.UUID, uuid.UUID | None], object]) -> JobAction:
    """Run a job service action, then show the job again; a refusal (409) reads as a sentence on the page."""
    try:
        action(db_session(), job_id, tenant_scope())
    except ApiError as exc:
        if exc.status == 404:
            raise
        return _render_job(job_id, exc.message), exc.status
    return redirect(url_for("web.job_page", job_id=job_id), 303)


@bp.post("/jobs/<uuid:job_id>/cancel")
def cancel_job(job_id: uuid.UUID) -> JobAction:
    return _act(job_id, get_job_service().cancel)


@bp.post("/jobs/<uuid:job_id>/retry")
def retry_job(job_id: uuid.UUID) -> JobAction:
    return _act(job_id, get_job_service().retry)


@bp.get("/jobs")
def jobs_page() -> str:
    page = min(max(request.args.get("page", 1, type=int), 1), MAX_PAGE)
    statuses = status_filter(request.args.getlist("status"))
    offset = (page - 1) * JOBS_PER_PAGE
    jobs, total = get_job_service().page(db_session(), JOBS_PER_PAGE, offset, tenant_scope(), statuses)
    return render_template(
        "jobs.html",
        jobs=jobs,
        names_per_job=NAMES_PER_JOB,
        page=page,
        has_next=page * JOBS_PER_PAGE < total,
        total=total,
        statuses=JOB_STATUSES,
        chosen=statuses,
        filter_args={"status": ",".join(statuses)} if statuses else {},
    )

"""``/jobs``: the recent jobs (``?status=`` one or several, as in the API); ``/jobs/<job_id>``: a job's
progress, then its images with boxes and detections, with Cancel and Retry buttons (plain form posts with
CSRF tokens, so they work without JavaScript)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Response, redirect, render_template, request, url_for

from app import job_actions
from app.annotate import Box, boxes
from app.api.annotated import THUMBNAIL_SIDE
from app.auth import tenant_scope
from app.errors import ApiError, to_api_error
from app.extensions import db_session, get_job_service, get_settings
from app.forms import status_filter
from app.web import bp
from jobs.errors import AlreadyFinished, JobNotFound, NotRetryable
from storage.tables import JOB_STATUSES, Upload

JOBS_PER_PAGE = 25
MAX_PAGE_NUMBER = 100_000  # the last page the list serves: a larger number is read as this one
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

    @property
    def thumbnail_size(self) -> tuple[int, int]:
        """The thumbnail's size, so the grid keeps its layout while thumbnails load."""
        scale = min(1.0, THUMBNAIL_SIDE / max(self.width or 1, self.height or 1))
        return max(1, round((self.width or 1) * scale)), max(1, round((self.height or 1) * scale))

    @property
    def counts(self) -> list[tuple[str, int]]:
        """How many objects of each class were found, in class order."""
        return class_counts([self])


def class_counts(files: Sequence[FileView]) -> list[tuple[str, int]]:
    """Objects found per class over ``files``, in class order."""
    counts = Counter((box.cls, box.name) for file in files for box in file.boxes)
    return [(name, count) for (_cls, name), count in sorted(counts.items())]


@bp.app_template_filter("when")
def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


@bp.get("/jobs/<uuid:job_id>")
def job_page(job_id: uuid.UUID) -> str:
    return _render_job(job_id)


@bp.get("/jobs/<path:anything>")
def no_such_job(anything: str) -> str:
    """A job URL whose id is not a job id: the same sentence as for an unknown job."""
    raise JobNotFound


def _render_job(job_id: uuid.UUID, error: str | None = None) -> str:
    job = get_job_service().find(db_session(), job_id, tenant_scope())
    files = [FileView.of(u) for u in job.uploads]
    done = [f for f in files if f.upload.result is not None and not f.upload.result.error]
    return render_template(
        "job.html",
        job=job,
        files=files,
        summary=class_counts(files),
        empty=sum(1 for f in done if not f.boxes),
        failed=sum(1 for f in files if f.upload.result is not None and f.upload.result.error),
        bundled=get_settings().runs_bundled_weights(job.model),
        error=error,
    )


@bp.get("/jobs/<uuid:job_id>/files/<uuid:file_id>")
def file_page(job_id: uuid.UUID, file_id: uuid.UUID) -> str:
    """One image of a job at full size, its boxes drawn over it and listed, with links to its neighbours."""
    job = get_job_service().find(db_session(), job_id, tenant_scope())
    position = next((i for i, u in enumerate(job.uploads) if u.file_id == file_id), None)
    if position is None:
        raise ApiError(404, "not_found", "This job has no file with this id.")
    uploads = job.uploads
    return render_template(
        "file.html",
        job=job,
        file=FileView.of(uploads[position]),
        position=position,
        previous=uploads[position - 1] if position > 0 else None,
        next_upload=uploads[position + 1] if position + 1 < len(uploads) else None,
        bundled=get_settings().runs_bundled_weights(job.model),
    )


def _act(job_id: uuid.UUID, action: Callable[[uuid.UUID], object]) -> JobAction:
    """Run a job action (``app.job_actions``), then show the job again; a refusal reads as a sentence on the
    page (an unknown job is the 404 page)."""
    try:
        action(job_id)
    except (AlreadyFinished, NotRetryable) as exc:
        error = to_api_error(exc)
        return _render_job(job_id, error.message), error.status
    return redirect(url_for("web.job_page", job_id=job_id), 303)


@bp.post("/jobs/<uuid:job_id>/cancel")
def cancel_job(job_id: uuid.UUID) -> JobAction:
    return _act(job_id, job_actions.cancel)


@bp.post("/jobs/<uuid:job_id>/retry")
def retry_job(job_id: uuid.UUID) -> JobAction:
    return _act(job_id, job_actions.retry)


@bp.get("/jobs")
def jobs_page() -> str:
    page = min(max(request.args.get("page", 1, type=int), 1), MAX_PAGE_NUMBER)
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

"""``/jobs``: the recent jobs; ``/jobs/<job_id>``: a job's progress, then its images with boxes and detections."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from flask import render_template, request

from app.annotate import Box, boxes
from app.api.jobs import job_service, parse_uuid
from app.web import bp
from storage.models import Upload

JOBS_PER_PAGE = 25
MAX_PAGE = 100_000
NAMES_PER_JOB = 3


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


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    job = job_service().get(parse_uuid(job_id, "job"))
    return render_template("job.html", job=job, files=[FileView.of(u) for u in job.uploads])


@bp.get("/jobs")
def jobs_page() -> str:
    page = min(max(request.args.get("page", 1, type=int), 1), MAX_PAGE)
    jobs, total = job_service().list(JOBS_PER_PAGE, (page - 1) * JOBS_PER_PAGE)
    return render_template(
        "jobs.html",
        jobs=jobs,
        names_per_job=NAMES_PER_JOB,
        page=page,
        has_next=page * JOBS_PER_PAGE < total,
        total=total,
    )

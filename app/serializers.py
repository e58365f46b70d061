"""JSON shapes of jobs, files and results as the API returns them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import url_for

from storage.tables import Job, StoredFile, Upload


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def file_json(file: StoredFile) -> dict[str, Any]:
    return {
        "file_id": str(file.id),
        "sha256": file.sha256,
        "size": file.size,
        "content_type": file.content_type,
        "width": file.width,
        "height": file.height,
        "created_at": _time(file.created_at),
        "deleted_at": _time(file.deleted_at),
        "content_url": url_for("api.file_content", file_id=file.id),
    }


def upload_json(upload: Upload) -> dict[str, Any]:
    return {
        "file_id": str(upload.file_id),
        "filename": upload.filename,
        "sha256": upload.file.sha256,
        "size": upload.file.size,
        "content_type": upload.file.content_type,
        "deduplicated": upload.deduplicated,
    }


def result_json(upload: Upload) -> dict[str, Any]:
    result = upload.result
    assert result is not None
    return {
        "file_id": str(upload.file_id),
        "filename": upload.filename,
        "width": result.width,
        "height": result.height,
        "detections": result.detections,
        "error": result.error,
    }


def job_summary_json(job: Job) -> dict[str, Any]:
    return {
        "job_id": str(job.id),
        "status": job.status,
        "model": job.model,
        "progress": {"done": job.done_files, "total": job.total_files},
        "created_at": _time(job.created_at),
        "finished_at": _time(job.finished_at),
        "url": url_for("api.show_job", job_id=job.id),
    }


def submission_json(job: Job) -> dict[str, Any]:
    """The 202 answer to a new job: its id, status and files (replayed as-is under an Idempotency-Key)."""
    return {"job_id": str(job.id), "status": job.status, "files": [upload_json(u) for u in job.uploads]}


def job_json(job: Job) -> dict[str, Any]:
    """Everything about one job: status, progress, parameters, files and results so far."""
    return {
        **job_summary_json(job),
        "parameters": {"model": job.model, "conf": round(job.conf, 4), "iou": round(job.iou, 4), "imgsz": job.imgsz},
        "started_at": _time(job.started_at),
        "enqueued_at": _time(job.enqueued_at),
        "attempts": job.attempts,
        "task_id": job.task_id or str(job.id),
        "lease_expires_at": _time(job.lease_expires_at),
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "files": [upload_json(u) for u in job.uploads],
        "results": [result_json(u) for u in job.uploads if u.result is not None],
    }

"""JSON shapes of jobs, files and results as the API returns them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import url_for

from storage.tables import Job, StoredFile, Upload, WebhookDelivery
from webhooks.event import message_id


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


def webhook_json(job: Job) -> dict[str, Any] | None:
    """The job's ``job.finished`` webhook: its URL and its latest delivery (one per end of the job): ``status``
    (null until the job ends, then pending, delivered, failed, gone or refused) and each attempt with its time,
    HTTP status or error and duration; None without a callback URL."""
    if job.callback_url is None:
        return None
    latest: WebhookDelivery | None = job.webhook_deliveries[-1] if job.webhook_deliveries else None
    attempts = [
        {
            "attempted_at": _time(a.attempted_at),
            "http_status": a.http_status,
            "error": a.error,
            "duration_ms": a.duration_ms,
        }
        for a in (latest.attempt_log if latest else [])
    ]
    return {
        "url": job.callback_url,
        "status": latest.status if latest else None,
        "event_id": message_id(latest.id) if latest else None,
        "next_attempt_at": _time(latest.next_attempt_at) if latest else None,
        "attempts": attempts,
    }


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
        "webhook": webhook_json(job),
    }

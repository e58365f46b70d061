"""JSON shapes of jobs, files and results as the API returns them.

A job may run on thousands of files: its answers carry a page of them (``files_limit``
from ``files_offset``, ``files_total`` in all), so an answer's size is bounded.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flask import url_for

from app.annotate import Box, boxes
from files.ownership import HeldFile
from jobs.progress import file_state
from storage.tables import Job, JobPart, Upload, WebhookDelivery
from webhooks.event import message_id


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def file_json(held: HeldFile) -> dict[str, Any]:
    """A stored file as its tenant holds it: ``created_at`` is when that tenant first stored it, never when any
    tenant did (which would tell that another had sent the same bytes before)."""
    file = held.file
    return {
        "file_id": str(file.id),
        "sha256": file.sha256,
        "size": file.size,
        "content_type": file.content_type,
        "width": file.width,
        "height": file.height,
        **({"media": file.media} if file.media else {}),
        "created_at": _time(held.held_since),
        "deleted_at": _time(file.deleted_at),
        "content_url": url_for("api.file_content", file_id=file.id),
    }


# The files a job's answer lists by default (``files_limit``), and the most it may ask for.
FILES_PAGE = 100
MAX_FILES_PAGE = 1000


def upload_json(upload: Upload) -> dict[str, Any]:
    """One file of a job; a file its tenant deleted keeps only its name (``deleted``)."""
    if upload.file is None:
        return {"filename": upload.filename, "deleted": True, "deleted_at": _time(upload.file_deleted_at)}
    return {
        "file_id": str(upload.file_id),
        "filename": upload.filename,
        "sha256": upload.file.sha256,
        "size": upload.file.size,
        "content_type": upload.file.content_type,
        "deduplicated": upload.deduplicated,
        **({"media": upload.file.media} if upload.file.media else {}),
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
        "cached": result.cached,
        **({"frames_url": frames_url(upload)} if upload.file is not None and upload.file.media else {}),
    }


def file_progress_json(job: Job, upload: Upload) -> dict[str, Any]:
    """One file of a job as its progress lists it (``upload`` with its result loaded): its state, the size its
    boxes are in and the boxes themselves, upright, in pixels to a tenth and confidence to a thousandth (class
    names are listed once for the answer: :func:`class_names`)."""
    result = upload.result
    found = boxes(result.detections) if result is not None else []
    return {
        "position": upload.position,
        "file_id": str(upload.file_id) if upload.file_id else None,
        "state": file_state(job, upload),
        "width": result.width if result else None,
        "height": result.height if result else None,
        "detections": len(result.detections) if result else 0,
        "boxes": [{"class": b.cls, "confidence": round(b.confidence, 3), "box": _rounded(b)} for b in found],
        "error": result.error if result else None,
    }


def _rounded(box: Box) -> list[float]:
    return [round(value, 1) for value in (box.x1, box.y1, box.x2, box.y2)]


def class_names(uploads: Sequence[Upload]) -> dict[str, str]:
    """The name of each class that the boxes of ``uploads`` (with their results loaded) have, by class index."""
    return {str(b.cls): b.name for u in uploads if u.result is not None for b in boxes(u.result.detections)}


def frames_url(upload: Upload) -> str:
    """Where a video upload's per-frame detections are paged by time (``?start=&end=``)."""
    return url_for("api.video_frames", job_id=upload.job_id, file_id=upload.file_id)


def job_summary_json(job: Job) -> dict[str, Any]:
    return {
        "job_id": str(job.id),
        "status": job.status,
        "model": job.model,
        "progress": progress_json(job),
        "created_at": _time(job.created_at),
        "finished_at": _time(job.finished_at),
        "url": url_for("api.show_job", job_id=job.id),
    }


def progress_json(job: Job) -> dict[str, Any]:
    """Files done of files to do; for a job with videos also its sampled frames: analysed (``done``), to do
    (``total``: exact once each segment has listed its own) and those that could not be decoded (``failed``)."""
    progress: dict[str, Any] = {"done": job.done_files, "total": job.total_files}
    if job.total_frames is not None:
        progress["frames"] = {"done": job.done_frames, "total": job.total_frames, "failed": job.failed_frames}
    return progress


def parameters_json(job: Job) -> dict[str, Any]:
    """What the job asks of inference, and of videos and large images."""
    return {
        "model": job.model,
        "conf": round(job.conf, 4),
        "iou": round(job.iou, 4),
        "imgsz": job.imgsz,
        "fps": job.sample_fps,
        "start": job.start_seconds,
        "end": job.end_seconds,
        "track": job.track,
        "tiles": job.tiles,
    }


def part_json(part: JobPart, file_id: uuid.UUID | None) -> dict[str, Any]:
    """One segment of a video (or tile group of an image) of the stored file ``file_id``: the web page's timeline
    draws these."""
    return {
        "file_id": str(file_id) if file_id else None,
        "kind": part.kind,
        "number": part.number,
        "start": part.start_seconds,
        "end": part.end_seconds,
        "status": part.status,
        "done": part.units_done,
        "total": part.units_expected,
        "failed": part.units_failed,
        "error": part.error,
    }


def submission_json(job: Job) -> dict[str, Any]:
    """The 202 answer to a new job: its id, status and first :data:`FILES_PAGE` files, and how many it has
    (replayed as-is under an Idempotency-Key)."""
    files = [upload_json(u) for u in job.uploads[:FILES_PAGE]]
    return {"job_id": str(job.id), "status": job.status, "files": files, "files_total": job.total_files}


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


def job_json(
    job: Job, uploads: Sequence[Upload], files_offset: int, files_limit: int, parts: Sequence[JobPart] = ()
) -> dict[str, Any]:
    """Everything about one job: status, progress, parameters, and a page of its files and their results so far
    (``uploads``, at most ``files_limit`` from ``files_offset``) with their parts (a video's segments)."""
    by_upload = {u.id: u for u in uploads}
    return {
        **job_summary_json(job),
        "parameters": parameters_json(job),
        "started_at": _time(job.started_at),
        "enqueued_at": _time(job.enqueued_at),
        "attempts": job.attempts,
        "task_id": job.task_id or str(job.id),
        "lease_expires_at": _time(job.lease_expires_at),
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "files": [upload_json(u) for u in uploads],
        "results": [result_json(u) for u in uploads if u.result is not None],
        "files_total": job.total_files,
        "files_offset": files_offset,
        "files_limit": files_limit,
        "webhook": webhook_json(job),
        "parts": [part_json(p, by_upload[p.upload_id].file_id) for p in parts if p.upload_id in by_upload],
    }

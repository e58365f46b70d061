"""Creating jobs from uploaded files: the service both the JSON API and the web form call."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping, Sequence

from flask import g
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.datastructures import FileStorage

from app.dispatch import TaskDispatcher
from app.errors import ApiError, service_unavailable
from app.metrics import JOBS_CREATED, UPLOAD_BYTES
from storage import Storage
from storage.blobs import IncomingFile
from storage.images import ImageTooLarge, NotAnImage, identify_image
from storage.jobs import JobParams, NewUpload, create_job, delete_job, get_job, list_jobs, mark_enqueued
from storage.logs import job_context
from storage.models import Job

log = logging.getLogger(__name__)

MAX_FILES_PER_JOB = 100
MAX_FILENAME_LENGTH = 255


def whole_number(raw: str, name: str, low: int, high: int) -> int:
    """``raw`` as an integer in ``[low, high]``; 400 ``invalid_parameter`` otherwise."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(high)) or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be a whole number between {low} and {high}.")
    return int(raw)


def _number(form: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = form.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be a number between {low} and {high}.") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be a number between {low} and {high}.")
    return value


def parse_params(form: Mapping[str, str], known_models: Sequence[str], default_model: str) -> JobParams:
    """Validate the optional ``model``, ``conf``, ``iou`` and ``imgsz`` fields."""
    model = form.get("model", "").strip() or default_model
    if model not in known_models:
        raise ApiError(400, "unknown_model", f"Unknown model {model!r}; known models: {', '.join(known_models)}.")
    raw_imgsz = form.get("imgsz", "").strip()
    imgsz = whole_number(raw_imgsz, "imgsz", 32, 4096) if raw_imgsz else None
    return JobParams(
        model=model,
        conf=_number(form, "conf", JobParams.conf, 0.0, 1.0),
        iou=_number(form, "iou", JobParams.iou, 0.0, 1.0),
        imgsz=imgsz,
    )


def clean_filename(name: str | None, position: int) -> str:
    """The client's filename for display only: printable, bounded, never a path."""
    cleaned = "".join(ch for ch in (name or "") if ch.isprintable()).strip()
    cleaned = cleaned.replace("\\", "/").rsplit("/", 1)[-1]
    return cleaned[:MAX_FILENAME_LENGTH] or f"image-{position + 1}"


def identify_uploads(files: Sequence[FileStorage]) -> list[NewUpload]:
    """Check that each part is a non-empty accepted image; raise 400/413/415 otherwise."""
    if not files:
        raise ApiError(400, "no_image", "Attach at least one file in an 'image' field.")
    if len(files) > MAX_FILES_PER_JOB:
        raise ApiError(400, "too_many_files", f"A job takes at most {MAX_FILES_PER_JOB} files.")
    uploads = []
    for position, part in enumerate(files):
        incoming = part.stream
        if not isinstance(incoming, IncomingFile):
            raise ApiError(400, "no_image", "The 'image' field must be a file upload.")
        name = clean_filename(part.filename, position)
        if incoming.size == 0:
            raise ApiError(400, "empty_file", f"{name} is empty.")
        try:
            info = identify_image(incoming)
        except NotAnImage as exc:
            raise ApiError(415, "unsupported_media_type", f"{name}: {exc}.") from None
        except ImageTooLarge as exc:
            raise ApiError(413, "image_too_large", f"{name}: {exc}.") from None
        uploads.append(NewUpload(incoming, name, info))
    return uploads


class JobService:
    """Stores the uploads, commits the job, then enqueues its ID-only task."""

    def __init__(self, storage: Storage, dispatcher: TaskDispatcher, models: Sequence[str], default_model: str) -> None:
        self.storage = storage
        self.dispatcher = dispatcher
        self.models = list(models)
        self.default_model = default_model

    def create(self, files: Sequence[FileStorage], form: Mapping[str, str]) -> Job:
        """Create and enqueue a job; count the outcome (queued, rejected, unavailable or error)."""
        try:
            job = self._create(files, form)
        except ApiError as exc:
            JOBS_CREATED.labels("unavailable" if exc.status == 503 else "rejected").inc()
            raise
        except (OperationalError, InterfaceError, OSError):  # database or volume trouble: answered 503/507
            JOBS_CREATED.labels("unavailable").inc()
            raise
        except Exception:
            JOBS_CREATED.labels("error").inc()
            raise
        JOBS_CREATED.labels("queued").inc()
        g.job_id = str(job.id)  # the request's log line names the job it created
        UPLOAD_BYTES.inc(sum(u.file.size for u in job.uploads if not u.deduplicated))
        return job

    def _create(self, files: Sequence[FileStorage], form: Mapping[str, str]) -> Job:
        params = parse_params(form, self.models, self.default_model)
        uploads = identify_uploads(files)
        with self.storage.session() as session:
            job_id = create_job(session, self.storage.blobs, params, uploads).id
        with job_context(str(job_id)):
            try:
                created = self.get(job_id)  # as committed: queued, before any worker can pick it up
            except Exception:
                self._withdraw(job_id)
                raise
            self._enqueue(job_id)
            log.info("job created files=%d model=%s", created.total_files, created.model)
        return created

    def _enqueue(self, job_id: uuid.UUID) -> None:
        try:
            self.dispatcher.send_detect(job_id)
        except Exception as exc:  # unreachable, refused or not confirmed by the broker
            log.warning("enqueue failed, withdrawing the job: %s", exc)
            self._withdraw(job_id)
            raise service_unavailable("broker") from exc
        try:
            with self.storage.session() as session:
                mark_enqueued(session, job_id)
        except Exception:  # the task is on its way; the timestamp is only bookkeeping
            log.warning("could not record enqueued_at", exc_info=True)

    def _withdraw(self, job_id: uuid.UUID) -> None:
        """Delete a job the client will not get a 202 for.

        If the database is down too, the row stays, and the maintenance worker's
        ``requeue_stranded_jobs`` runs the job later instead.
        """
        try:
            with self.storage.session() as session:
                delete_job(session, job_id)
        except Exception:
            log.warning("could not withdraw the job", exc_info=True)

    def get(self, job_id: uuid.UUID) -> Job:
        with self.storage.session() as session:
            job = get_job(session, job_id)
        if job is None:
            raise ApiError(404, "not_found", "No job with this id.")
        return job

    def list(self, limit: int, offset: int) -> tuple[list[Job], int]:
        with self.storage.session() as session:
            return list_jobs(session, limit, offset)

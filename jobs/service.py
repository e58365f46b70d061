"""The job service the JSON API and the web pages share: submit, find, page, cancel, retry and rerun jobs.

It knows nothing of HTTP: it takes what the caller already parsed (parameters,
identified uploads, the tenant, an idempotency key), returns domain results, and
raises ``jobs.errors``; the views turn those into answers and count them.

A submission commits the job first, then sends its ID-only task and records that
it was sent (``jobs.dispatch``); a job the broker refused is withdrawn, so the
client either gets an answer for a job that will run, or an error and nothing stored.
With an idempotency key (``jobs.idempotency``) a repeated submission gets what the
first one was answered instead of making a second job. A job may also run on files
the tenant holds already (``file_ids``, ``files.ownership``), and a rerun is a new job
on its original's files: neither copies a byte.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from config import Settings
from config.logs import job_context
from files.ownership import held_files
from inference.defaults import DEFAULT_INFERENCE_SIZE
from jobs.catalog import ModelInfo
from jobs.dispatch import new_task_id, send_then_mark
from jobs.errors import (
    AlreadyFinished,
    BrokerUnavailable,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    JobNotFound,
    NoFilesLeft,
    NotAnImageFile,
    NotRetryable,
    TooManyActiveJobs,
    UnknownFiles,
)
from jobs.idempotency import (
    Claim,
    Claimed,
    Replay,
    StoredResponse,
    TakenOver,
    attach_job,
    claim_key,
    fingerprint,
    release_key,
    store_response,
)
from jobs.lifecycle import (
    NO_MEDIA,
    FileReference,
    JobParams,
    MediaParams,
    NewUpload,
    active_jobs,
    cancel_job,
    create_job,
    retry_job,
    withdraw_job,
)
from jobs.parts import PartPlan, parts_of, plan_parts, reset_parts
from jobs.queries import (
    UploadsInPages,
    find_job,
    first_filenames,
    live_files_of,
    neighbours_of,
    page_of_jobs,
    page_of_uploads,
    upload_in_job,
    video_in_job,
)
from jobs.registry import ModelRegistry
from storage import Storage
from storage.tables import Job, JobPart, Upload

log = logging.getLogger(__name__)

# The media parameters a rerun may change (and otherwise keeps from the job it reruns).
MEDIA_FIELDS = tuple(f.name for f in fields(MediaParams))

# The caller's answer to a new job, built from the rows just written; stored for the replays of its key.
Answer = Callable[[Job], StoredResponse]
# The files a new job runs on besides its uploaded images, read once its idempotency key is claimed.
References = Callable[[], list[FileReference]]


class TaskSender(Protocol):
    """What the service needs of the API's task dispatcher."""

    def send_detect(self, job_id: uuid.UUID, task_id: str) -> None:
        """Publish the job's task as ``task_id``; raise when the broker does not take it."""

    def revoke(self, task_id: str) -> None:
        """Tell the workers to discard ``task_id``, best effort (never raises)."""


@dataclass(frozen=True)
class NewJob:
    """A job submission as the caller parsed and checked it: uploaded images, then files the tenant holds."""

    params: JobParams
    uploads: Sequence[NewUpload]
    callback_url: str | None = None
    file_ids: Sequence[uuid.UUID] = ()
    media: MediaParams = NO_MEDIA


@dataclass(frozen=True)
class JobFiles:
    """A job with one page of its uploads (each with its file and result) and how many it has."""

    job: Job
    uploads: list[Upload]
    total: int
    parts: list[JobPart] = field(default_factory=list)


@dataclass(frozen=True)
class Submission:
    """The outcome of a submission: its job, the answer, whether it was replayed from the idempotency key, and
    the bytes of the uploads its tenant had not sent before (0 when no job was created)."""

    job_id: uuid.UUID
    answer: StoredResponse
    replayed: bool = False
    new_bytes: int = 0


class JobService:
    """Stores the uploads, commits the job, then enqueues its ID-only task."""

    def __init__(self, settings: Settings, storage: Storage, sender: TaskSender) -> None:
        self.settings = settings
        self.max_active_jobs = settings.api.max_active_jobs
        self.storage = storage
        self.sender = sender
        self.models = ModelRegistry(settings, storage)

    def submit(
        self,
        session: Session,
        tenant_id: uuid.UUID,
        new_job: NewJob,
        answer: Answer,
        idempotency_key: str | None = None,
    ) -> Submission:
        """Create and enqueue a job of ``tenant_id``, or replay the answer stored under ``idempotency_key``.

        Raises :class:`TooManyActiveJobs`, :class:`IdempotencyKeyReused`, :class:`IdempotencyKeyInProgress`,
        :class:`BrokerUnavailable`; ``jobs.catalog.UnknownModel`` or ``ModelRetired`` (:meth:`sized`); for
        ``file_ids``, :class:`UnknownFiles`, :class:`NotAnImageFile`, :class:`files.errors.FileGone`; for new bytes
        past the tenant's storage quota, :class:`files.errors.StorageQuotaExceeded` or
        :class:`files.errors.LargerThanQuota`.
        """
        # An image is known by its bytes, a reference by its id.
        files = [u.incoming.sha256 for u in new_job.uploads] + [f"file:{i}" for i in new_job.file_ids]
        request = fingerprint(new_job.params, files, new_job.callback_url, new_job.media)

        def references() -> list[FileReference]:
            return held_references(session, tenant_id, new_job.file_ids)

        return self._submit(session, tenant_id, new_job, references, answer, request, idempotency_key)

    def rerun(
        self,
        session: Session,
        tenant_id: uuid.UUID,
        job_id: uuid.UUID,
        changes: Mapping[str, Any],
        answer: Answer,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Submission:
        """A new job of ``tenant_id`` on the files of its job ``job_id``, with the parameters in ``changes``
        (``model``, ``conf``, ``iou``, ``imgsz``, and the media parameters ``sample_fps``, ``start_seconds``,
        ``end_seconds``, ``track``, ``tiles``) changed and the others kept: no byte is copied.

        Files their tenant deleted are left out; :class:`NoFilesLeft` when none is left, :class:`JobNotFound`
        for a job that is not the tenant's own, :class:`files.errors.FileGone` when retention removed a file's
        bytes; otherwise as :meth:`submit`, the idempotency key included.
        """
        original = self._job(session, job_id, tenant_id)
        params = replace(
            JobParams(original.model, original.conf, original.iou, original.imgsz),
            **{name: value for name, value in changes.items() if name in ("model", "conf", "iou", "imgsz")},
        )
        kept = MediaParams(
            original.sample_fps, original.start_seconds, original.end_seconds, original.track, original.tiles
        )
        media = replace(kept, **{name: value for name, value in changes.items() if name in MEDIA_FIELDS})
        new_job = NewJob(params, (), callback_url, media=media)
        request = fingerprint(params, [f"rerun:{job_id}"], callback_url, media)

        def references() -> list[FileReference]:
            files = live_files_of(session, job_id)
            if not files:
                raise NoFilesLeft
            return [FileReference(file, filename) for file, filename in files]

        submission = self._submit(session, tenant_id, new_job, references, answer, request, idempotency_key)
        if not submission.replayed:
            with job_context(str(submission.job_id)):
                log.info("job created as a rerun of %s", job_id)
        return submission

    def _submit(
        self,
        session: Session,
        tenant_id: uuid.UUID,
        new_job: NewJob,
        references: References,
        answer: Answer,
        request_fingerprint: str,
        key: str | None,
    ) -> Submission:
        """Create and enqueue the job (its uploads, then ``references()``), or replay the key's answer."""
        if key is not None:
            match self._claim(session, tenant_id, key, request_fingerprint):
                case Replay(stored):
                    return Submission(uuid.UUID(stored.body["job_id"]), stored, replayed=True)
                case TakenOver(job_id):
                    job = self.find(session, job_id, tenant_id)
                    return self._answer(session, tenant_id, key, Submission(job.id, answer(job), replayed=True))
                case Claimed():
                    pass  # this request creates the job
        try:
            if active_jobs(session, tenant_id) >= self.max_active_jobs:
                raise TooManyActiveJobs(self.max_active_jobs)
            params = self.sized(session, new_job.params)
            job = create_job(
                session,
                self.storage.blobs,
                params,
                new_job.uploads,
                tenant_id,
                new_job.callback_url,
                references(),
                self.settings.files.storage_bytes,
                new_job.media,
            )
            plan_parts(session, job, new_job.media, self._part_plan(params))
            new_bytes = sum(u.file.size for u in job.uploads if not u.deduplicated)
            submission = Submission(job.id, answer(job), new_bytes=new_bytes)  # nothing is read back
            if key is not None:
                attach_job(session, tenant_id, key, job.id)
            session.commit()
        except Exception:
            session.rollback()
            if key is not None:
                self._release(session, tenant_id, key)
            raise
        with job_context(str(job.id)):
            self._enqueue(session, job.id, str(job.id), withdraw=True)
            log.info("job created files=%d model=%s", job.total_files, job.model)
        return self._answer(session, tenant_id, key, submission)

    def _part_plan(self, params: JobParams) -> PartPlan:
        """How a job's large media is cut: tiles of the side the job's model runs at (640, Ultralytics' default,
        while no worker has reported the model)."""
        media = self.settings.media
        side = params.imgsz or DEFAULT_INFERENCE_SIZE
        return PartPlan(media.segment_seconds, media.tiles_per_part, media.tile_overlap, side)

    def models_of(self, session: Session) -> list[ModelInfo]:
        """The models a new job may ask for, with what the workers reported of them."""
        return self.models.listing(session)

    def sized(self, session: Session, params: JobParams) -> JobParams:
        """``params`` with the registry's name of their model and the inference size the job will run at (the
        model's fixed size if it has one, else the size asked for or the model's default, rounded to its stride),
        so the job records it; as asked while no worker has reported the model. ``jobs.catalog.UnknownModel``
        or ``ModelRetired`` when the registry holds no such model, or retired it."""
        model = self.models.for_job(session, params.model)
        return replace(params, model=model.name, imgsz=model.size_for(params.imgsz))

    def _claim(self, session: Session, tenant_id: uuid.UUID, key: str, request_fingerprint: str) -> Claim:
        try:
            claimed = claim_key(session, tenant_id, key, request_fingerprint)
            session.commit()
        except (IdempotencyKeyReused, IdempotencyKeyInProgress):
            session.rollback()
            raise
        return claimed

    def _answer(self, session: Session, tenant_id: uuid.UUID, key: str | None, submission: Submission) -> Submission:
        """Store the answer under the request's idempotency key, if it has one, for its replays."""
        if key is not None:
            try:
                store_response(session, tenant_id, key, submission.answer)
                session.commit()
            except SQLAlchemyError:  # the key still leads to the job: a replay answers it after the claim times out
                session.rollback()
                log.warning("could not store the response of an idempotent request", exc_info=True)
        return submission

    def _release(self, session: Session, tenant_id: uuid.UUID, key: str) -> None:
        try:
            release_key(session, tenant_id, key)
            session.commit()
        except SQLAlchemyError:
            session.rollback()
            log.warning("could not release an idempotency key; it is taken over after its claim times out")

    def _enqueue(self, session: Session, job_id: uuid.UUID, task_id: str, withdraw: bool) -> None:
        """Send the job's task and record it; when the broker refuses, withdraw a new job and raise
        :class:`BrokerUnavailable`.

        A job that cannot be withdrawn (the database went down too), or whose send
        was not recorded, stays queued: beat's reaper sends it again.
        """

        def send(job_id: uuid.UUID, task_id: str) -> None:
            self.sender.send_detect(job_id, task_id)
            # Then enqueued_at is one UPDATE in autocommit, without a BEGIN and a COMMIT around it.
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})

        try:
            send_then_mark(session, job_id, send, task_id)
            session.commit()
        except SQLAlchemyError:  # the task is on its way; enqueued_at is only bookkeeping
            session.rollback()
            log.warning("could not record enqueued_at", exc_info=True)
        except Exception as exc:  # unreachable, refused or not confirmed by the broker
            session.rollback()
            if withdraw:
                log.warning("enqueue failed, withdrawing the job: %s", exc)
                self._withdraw(session, job_id)
                raise BrokerUnavailable from exc
            log.warning("enqueue failed; the reaper sends the job when the broker is back: %s", exc)

    def _withdraw(self, session: Session, job_id: uuid.UUID) -> None:
        """Delete a job the client will not get an answer for (its idempotency key goes with it)."""
        try:
            withdraw_job(session, job_id)
            session.commit()
        except SQLAlchemyError:
            session.rollback()
            log.warning("could not withdraw the job; the reaper will run it", exc_info=True)

    def find(self, session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Job:
        """The job of ``tenant_id`` (any tenant's when None) with everything about it; :class:`JobNotFound`
        when there is none."""
        job = find_job(session, job_id, tenant_id)
        if job is None:
            raise JobNotFound
        return job

    def find_page(
        self, session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None, limit: int, offset: int
    ) -> JobFiles:
        """The job (as :meth:`find`) with only a page of its uploads: bounded for a job of any size."""
        job = self._job(session, job_id, tenant_id)
        uploads = page_of_uploads(session, job_id, limit, offset)
        return JobFiles(job, uploads, job.total_files, parts_of(session, [u.id for u in uploads]))

    def find_upload(
        self, session: Session, job_id: uuid.UUID, file_id: uuid.UUID, tenant_id: uuid.UUID | None
    ) -> tuple[Job, Upload | None]:
        """The job of ``tenant_id`` (without its uploads) and its upload of the stored file (None when it has
        none), with that upload's file and result: :class:`JobNotFound` when there is no such job."""
        return self._job(session, job_id, tenant_id), upload_in_job(session, job_id, file_id)

    def neighbours(self, session: Session, upload: Upload) -> tuple[Upload | None, Upload | None]:
        """The uploads of the job just before and after ``upload`` whose file was not deleted."""
        return neighbours_of(session, upload)

    def export_source(
        self, session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None
    ) -> tuple[Job, UploadsInPages]:
        """The job (without its uploads) and its uploads with a result, read a page at a time whenever they are
        gone through (``jobs.exports.job_export``): an export of any size in bounded memory."""
        return self._job(session, job_id, tenant_id), UploadsInPages(session, job_id)

    def video_source(
        self, session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None, file_id: uuid.UUID | None
    ) -> tuple[Job, Upload | None]:
        """The job (without its uploads) and its upload of the video ``file_id`` (its first video when None; None
        when it has no such video), with the file loaded: what a video export is made from."""
        return self._job(session, job_id, tenant_id), video_in_job(session, job_id, file_id)

    def page(
        self, session: Session, limit: int, offset: int, tenant_id: uuid.UUID | None, statuses: Sequence[str] = ()
    ) -> tuple[list[Job], int]:
        """A page of the tenant's jobs in ``statuses`` (any when empty), newest first, and their total (without
        their uploads: a job may have thousands)."""
        return page_of_jobs(session, limit, offset, tenant_id, statuses)

    def first_filenames(self, session: Session, jobs: Sequence[Job], count: int) -> dict[uuid.UUID, list[str]]:
        """The names of each job's first ``count`` files, for a list of jobs."""
        return first_filenames(session, [job.id for job in jobs], count)

    def _job(self, session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Job:
        """The job of ``tenant_id`` (any tenant's when None) without its uploads; :class:`JobNotFound` if none."""
        job = find_job(session, job_id, tenant_id, with_uploads=False)
        if job is None:
            raise JobNotFound
        return job

    def cancel(self, session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Job:
        """Cancel a queued or running job now, and revoke its task; :class:`AlreadyFinished` for a finished one.
        Returns the job without its uploads (:meth:`find_page` reads them).

        A running attempt stops at its next batch boundary without writing again.
        """
        job = self._job(session, job_id, tenant_id)
        if not cancel_job(session, job_id):
            raise AlreadyFinished(job.status)
        session.commit()
        job = self._job(session, job_id, tenant_id)
        with job_context(str(job_id)):
            log.info("job cancelled by request")
            if job.task_id:
                self.sender.revoke(job.task_id)
        return job

    def retry(self, session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Job:
        """Queue a failed or cancelled job again for the files without a result; :class:`NotRetryable` otherwise.
        Returns the job without its uploads (:meth:`find_page` reads them).

        When the broker refuses the task, the job stays queued and beat's reaper sends it.
        """
        job = self._job(session, job_id, tenant_id)
        if not retry_job(session, job_id):
            raise NotRetryable(job.status)
        reset_parts(session, job_id)
        session.commit()
        with job_context(str(job_id)):
            self._enqueue(session, job_id, new_task_id(job_id), withdraw=False)
            log.info("job queued again by request")
        session.expire_all()  # changed by statements, not through the objects: read it again
        return self._job(session, job_id, tenant_id)


def held_references(session: Session, tenant_id: uuid.UUID, file_ids: Sequence[uuid.UUID]) -> list[FileReference]:
    """The files ``file_ids`` name, in their order (an id may repeat), each under the tenant's name for it: one
    query however many. :class:`UnknownFiles` for ids the tenant does not hold, :class:`NotAnImageFile` for a
    file that is not an image. Whether each is still live is checked under its lock (:func:`create_job`)."""
    held = held_files(session, tenant_id, file_ids)
    missing = [str(file_id) for file_id in dict.fromkeys(file_ids) if file_id not in held]
    if missing:
        raise UnknownFiles(missing)
    for file_id, found in held.items():
        if found.file.width is None:
            raise NotAnImageFile(str(file_id))
    return [FileReference(held[file_id].file, held[file_id].filename) for file_id in file_ids]

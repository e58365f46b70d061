"""The job service both the JSON API and the web pages call: submit, find, page, cancel and retry jobs.

A submission commits the job first, then sends its ID-only task and records that
it was sent (``jobs.dispatch``); a job the broker refused is withdrawn, so the
client either gets a 202 for a job that will run, or an error and nothing stored.
With an ``Idempotency-Key`` (``jobs.idempotency``) a repeated submission answers
what the first one was answered instead of making a second job.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from flask import g
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from accounts.keys import Principal
from app.dispatcher import TaskDispatcher
from app.errors import ApiError, service_unavailable, to_api_error
from app.forms import identify_uploads, parse_callback_url, parse_params
from app.metrics import JOB_ACTIONS, count_submission
from config import Settings
from config.logs import job_context
from jobs.catalog import ModelInfo, configured_models
from jobs.dispatch import new_task_id, send_then_mark
from jobs.idempotency import (
    Claim,
    Claimed,
    KeyInProgress,
    KeyReused,
    Replay,
    StoredResponse,
    TakenOver,
    attach_job,
    claim_key,
    fingerprint,
    release_key,
    store_response,
)
from jobs.lifecycle import JobParams, active_jobs, cancel_job, create_job, retry_job, withdraw_job
from jobs.queries import find_job, page_of_jobs
from storage import Storage
from storage.tables import Job

log = logging.getLogger(__name__)

# Builds the 202 body of a new job (the caller's serializer).
Render = Callable[[Job], dict[str, Any]]
CLAIM_RETRY_AFTER = 2
ACTIVE_JOBS_RETRY_AFTER = 10


@dataclass(frozen=True)
class Submission:
    """The answer to a job submission: its job, status code and body, and whether it was replayed."""

    job_id: uuid.UUID
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


class JobService:
    """Stores the uploads, commits the job, then enqueues its ID-only task."""

    def __init__(self, settings: Settings, storage: Storage, dispatcher: TaskDispatcher) -> None:
        self.settings = settings
        self.max_active_jobs = settings.api.max_active_jobs
        self.storage = storage
        self.dispatcher = dispatcher

    def submit(
        self,
        session: Session,
        principal: Principal,
        files: Sequence[FileStorage],
        form: Mapping[str, str],
        render: Render,
        idempotency_key: str | None = None,
    ) -> Submission:
        """Create and enqueue a job of the principal's tenant, or replay the answer stored under
        ``idempotency_key``; count the outcome."""
        try:
            submission = self._submit(session, principal.tenant_id, files, form, render, idempotency_key)
        except Exception as exc:
            count_submission(to_api_error(exc).status)
            raise
        g.job_id = str(submission.job_id)  # the request's log line names the job
        return submission

    def _submit(
        self,
        session: Session,
        tenant_id: uuid.UUID,
        files: Sequence[FileStorage],
        form: Mapping[str, str],
        render: Render,
        key: str | None,
    ) -> Submission:
        requested = parse_params(form, self.settings)  # what identifies the request under an Idempotency-Key
        callback_url = parse_callback_url(form)
        uploads = identify_uploads(files)
        if key is not None:
            digests = [u.incoming.sha256 for u in uploads]
            match self._claim(session, tenant_id, key, fingerprint(requested, digests, callback_url)):
                case Replay(stored):
                    return Submission(uuid.UUID(stored.body["job_id"]), stored.status_code, stored.body, True)
                case TakenOver(job_id):
                    job = self.find(session, job_id, tenant_id)
                    return self._answer(session, tenant_id, key, Submission(job.id, 202, render(job), replayed=True))
                case Claimed():
                    pass  # this request creates the job
        try:
            if active_jobs(session, tenant_id) >= self.max_active_jobs:
                message = f"This tenant has {self.max_active_jobs} jobs queued or running; wait for some to finish."
                raise ApiError(429, "too_many_active_jobs", message, ACTIVE_JOBS_RETRY_AFTER)
            params = self.sized(session, requested)
            job = create_job(session, self.storage.blobs, params, uploads, tenant_id, callback_url)
            submission = Submission(job.id, 202, render(job))  # from the rows just written: nothing is read back
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
        count_submission(202, sum(u.file.size for u in job.uploads if not u.deduplicated))
        return self._answer(session, tenant_id, key, submission)

    def models_of(self, session: Session) -> list[ModelInfo]:
        """The configured models with what the workers reported of them."""
        return configured_models(session, self.settings)

    def sized(self, session: Session, params: JobParams) -> JobParams:
        """``params`` with the inference size the job will run at (the model's default when none is asked for,
        rounded to its stride), so the job records it; as asked while no worker has reported the model."""
        info = next(m for m in self.models_of(session) if m.name == params.model)
        return replace(params, imgsz=info.size_for(params.imgsz))

    def _claim(self, session: Session, tenant_id: uuid.UUID, key: str, request_fingerprint: str) -> Claim:
        try:
            claimed = claim_key(session, tenant_id, key, request_fingerprint)
            session.commit()
        except KeyReused:
            session.rollback()
            message = "This Idempotency-Key was used for a different request; use a new key."
            raise ApiError(422, "idempotency_key_reused", message) from None
        except KeyInProgress:
            session.rollback()
            message = "A request with this Idempotency-Key is still in progress; retry it shortly."
            raise ApiError(409, "idempotency_key_in_progress", message, CLAIM_RETRY_AFTER) from None
        return claimed

    def _answer(self, session: Session, tenant_id: uuid.UUID, key: str | None, submission: Submission) -> Submission:
        """Store the answer under the request's idempotency key, if it has one, for its replays."""
        if key is not None:
            try:
                store_response(session, tenant_id, key, StoredResponse(submission.status_code, submission.body))
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
        """Send the job's task and record it; when the broker refuses, withdraw a new job, then answer 503.

        A job that cannot be withdrawn (the database went down too), or whose send
        was not recorded, stays queued: beat's reaper sends it again.
        """

        def send(job_id: uuid.UUID, task_id: str) -> None:
            self.dispatcher.send_detect(job_id, task_id)
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
                raise service_unavailable("broker") from exc
            log.warning("enqueue failed; the reaper sends the job when the broker is back: %s", exc)

    def _withdraw(self, session: Session, job_id: uuid.UUID) -> None:
        """Delete a job the client will not get a 202 for (its idempotency key goes with it)."""
        try:
            withdraw_job(session, job_id)
            session.commit()
        except SQLAlchemyError:
            session.rollback()
            log.warning("could not withdraw the job; the reaper will run it", exc_info=True)

    def find(self, session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Job:
        """The job of ``tenant_id`` (any tenant's when None) with everything about it; 404 when there is none."""
        job = find_job(session, job_id, tenant_id)
        if job is None:
            raise ApiError(404, "not_found", "No job with this id.")
        return job

    def page(
        self, session: Session, limit: int, offset: int, tenant_id: uuid.UUID | None, statuses: Sequence[str] = ()
    ) -> tuple[list[Job], int]:
        """A page of the tenant's jobs in ``statuses`` (any when empty), newest first, and their total."""
        return page_of_jobs(session, limit, offset, tenant_id, statuses)

    def cancel(self, session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Job:
        """Cancel a queued or running job now, and revoke its task; 409 ``already_finished`` for a finished one.

        A running attempt stops at its next batch boundary without writing again.
        """
        job = self.find(session, job_id, tenant_id)
        if not cancel_job(session, job_id):
            raise ApiError(409, "already_finished", f"The job already ended {job.status}; nothing to cancel.")
        session.commit()
        JOB_ACTIONS.labels("cancel").inc()
        job = self.find(session, job_id, tenant_id)
        with job_context(str(job_id)):
            log.info("job cancelled by request")
            if job.task_id:
                self.dispatcher.revoke(job.task_id)
        return job

    def retry(self, session: Session, job_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Job:
        """Queue a failed or cancelled job again for the files without a result; 409 ``not_retryable`` otherwise."""
        job = self.find(session, job_id, tenant_id)
        if not retry_job(session, job_id):
            message = f"Only a failed or cancelled job can be retried; this one is {job.status}."
            raise ApiError(409, "not_retryable", message)
        session.commit()
        JOB_ACTIONS.labels("retry").inc()
        with job_context(str(job_id)):
            self._enqueue(session, job_id, new_task_id(job_id), withdraw=False)
            log.info("job queued again by request")
        session.expire_all()  # changed by statements, not through the objects: read it again
        return self.find(session, job_id, tenant_id)

"""What the views (API and web alike) ask of the job service, counted: submit, cancel, retry, rerun and delete.

A submission's form is read here (``app.forms``), then handed to ``jobs.service``,
which knows nothing of HTTP; every outcome but a replay is counted (``app.metrics``),
a refusal by the status it will be answered with (``app.errors.api_error_of``: counted here, logged
where it is answered).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from flask import g
from werkzeug.datastructures import FileStorage

from app.auth import current_principal, tenant_scope
from app.errors import api_error_of
from app.extensions import db_session, get_dispatcher, get_job_service, get_settings, get_storage
from app.forms import (
    identify_uploads,
    parse_callback_url,
    parse_file_ids,
    parse_media,
    parse_param_changes,
    parse_params,
)
from app.metrics import JOB_ACTIONS, count_submission
from app.serializers import submission_json
from jobs import deletion
from jobs.idempotency import StoredResponse
from jobs.service import NewJob, Submission
from storage.tables import Job


def accepted(job: Job) -> StoredResponse:
    """The 202 a new job is answered with (and its idempotency key replays)."""
    return StoredResponse(202, submission_json(job))


def submit(
    files: Sequence[FileStorage],
    form: Mapping[str, str],
    idempotency_key: str | None = None,
    file_ids: Sequence[str] = (),
) -> Submission:
    """Create and enqueue a job of the request's tenant from its ``image`` parts, the stored files named by
    ``file_ids`` and its form fields, or replay the answer stored under ``idempotency_key``."""
    session, tenant_id = db_session(), current_principal().tenant_id
    with _refusals_counted():
        settings = get_settings()
        params = parse_params(form, settings)  # what identifies the request under an Idempotency-Key
        callback_url = parse_callback_url(form)
        ids = parse_file_ids(file_ids, settings.files.max_job_files)
        uploads = identify_uploads(files, len(ids), settings.worker.max_image_pixels)
        new_job = NewJob(params, uploads, callback_url, ids, parse_media(form))
        submission = get_job_service().submit(session, tenant_id, new_job, accepted, idempotency_key)
    return _counted(submission)


def rerun(job_id: uuid.UUID, form: Mapping[str, str], idempotency_key: str | None = None) -> Submission:
    """A new job of the request's tenant on the files of its job ``job_id``, with the ``model``, ``conf``,
    ``iou`` and ``imgsz`` the form sets and the original's others, and the form's ``callback_url``
    (``jobs.service.JobService.rerun``); what the web page's "Run again with…" calls too."""
    session, tenant_id = db_session(), current_principal().tenant_id
    with _refusals_counted():
        changes = parse_param_changes(form)
        callback_url = parse_callback_url(form)
        service = get_job_service()
        submission = service.rerun(session, tenant_id, job_id, changes, accepted, callback_url, idempotency_key)
    if not submission.replayed:
        JOB_ACTIONS.labels("rerun").inc()
    return _counted(submission)


@contextmanager
def _refusals_counted() -> Iterator[None]:
    """A submission refused (by its form or by the service) is counted by the status it will be answered with."""
    try:
        yield
    except Exception as exc:
        count_submission(api_error_of(exc).status)
        raise


def _counted(submission: Submission) -> Submission:
    if not submission.replayed:
        count_submission(submission.answer.status_code, submission.new_bytes)
    g.job_id = str(submission.job_id)  # the request's log line names the job
    return submission


def cancel(job_id: uuid.UUID) -> Job:
    """Cancel a job the request's principal can see (``jobs.service.JobService.cancel``)."""
    job = get_job_service().cancel(db_session(), job_id, tenant_scope())
    JOB_ACTIONS.labels("cancel").inc()
    return job


def retry(job_id: uuid.UUID) -> Job:
    """Queue a job the request's principal can see again (``jobs.service.JobService.retry``)."""
    job = get_job_service().retry(db_session(), job_id, tenant_scope())
    JOB_ACTIONS.labels("retry").inc()
    return job


def delete_job(job_id: uuid.UUID) -> deletion.Deleted:
    """Delete a job the request's principal can see, for real (``jobs.deletion.delete_job``), as the principal's key."""
    actor = current_principal().key_id
    return deletion.delete_job(db_session(), get_storage(), get_dispatcher(), job_id, tenant_scope(), actor)


def delete_file(file_id: uuid.UUID) -> deletion.Deleted:
    """Delete a file the request's principal holds, and every reference to it (``jobs.deletion.delete_file``)."""
    actor = current_principal().key_id
    return deletion.delete_file(db_session(), get_storage(), get_dispatcher(), file_id, tenant_scope(), actor)

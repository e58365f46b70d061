"""The job lifecycle: every change of a job's state is made here, and nowhere else.

::

    queued ──begin_attempt──▶ running ──finish_jobs──▶ succeeded
      │  ▲                      │  │
      │  └──(lease expired: the reaper re-sends; the next begin_attempt takes over)
      │                         │  └──fail_job──▶ failed ──retry_job──▶ queued
      └──────cancel_job─────────┴──────────────▶ cancelled ──retry_job──▶ queued

A job is created ``queued`` with its uploads, marked enqueued once its task is sent
(``jobs/dispatch.py``), withdrawn when the client never got its 202. A worker's
attempt takes a *lease*: a fresh random ``lease_token`` and ``lease_expires_at``,
renewed with every batch and by a heartbeat. Every write of an attempt is fenced by
its token, so an attempt that was cancelled, or outlived its lease and was replaced,
can never write again. ``begin_attempt`` refuses a job whose lease is still held, so
no two live attempts run one job. The API and the workers call these functions,
each inside a transaction of its own choosing; none of them commits. Every function
that ends a job also records its ``job.finished`` webhook in that same transaction
(``webhooks.outbox``), when the job has a callback URL.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Text,
    Update,
    and_,
    bindparam,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.types import DateTime

from files.errors import FileGone
from files.ownership import held_file_ids, held_files
from files.quota import ensure_room
from inference.defaults import DEFAULT_CONF, DEFAULT_IOU
from jobs.catalog import IMGSZ_RANGE
from jobs.errors import UnknownFiles
from storage.blobs import BlobStore, IncomingFile
from storage.files import store_incoming
from storage.locks import lock_digests
from storage.media import FileInfo
from storage.tables import Job, JobPart, ModelRecord, Result, StoredFile, TenantFile, Upload
from webhooks.outbox import record_job_finished

# Namespace of the per-tenant advisory lock that serialises the active-jobs quota ("YT").
TENANT_LOCK_NAMESPACE = 0x5954
JOBS = Job.__table__
UPLOADS = Upload.__table__
# The statements of a submission, built once (each execution binds its own values).
_JOB_COLUMNS = (
    "id",
    "status",
    "model",
    "conf",
    "iou",
    "imgsz",
    "total_files",
    "task_id",
    "tenant_id",
    "callback_url",
    "sample_fps",
    "start_seconds",
    "end_seconds",
    "track",
    "tiles",
)
_UPLOAD_COLUMNS = ("id", "job_id", "file_id", "position", "filename", "deduplicated")
_INSERT_JOB = JOBS.insert().returning(JOBS.c.created_at)
_INSERT_UPLOADS = UPLOADS.insert()
_TENANT_HAS_FILE = select(
    or_(
        select(UPLOADS.c.id)
        .join(JOBS, JOBS.c.id == UPLOADS.c.job_id)
        .where(UPLOADS.c.file_id == bindparam("file_id"), JOBS.c.tenant_id.is_not_distinct_from(bindparam("tenant_id")))
        .exists(),
        select(TenantFile.file_id)
        .where(TenantFile.file_id == bindparam("file_id"), TenantFile.tenant_id == bindparam("tenant_id"))
        .exists(),
    )
)
_LOCK_TENANT = text("SELECT pg_advisory_xact_lock(:ns, hashtext(:tenant))")
_COUNT_ACTIVE = (
    select(func.count())
    .select_from(JOBS)
    .where(JOBS.c.tenant_id.is_not_distinct_from(bindparam("tenant_id")), JOBS.c.finished_at.is_(None))
)
_MARK_ENQUEUED = (
    update(JOBS).where(JOBS.c.id == bindparam("job_id")).values(enqueued_at=func.now(), task_id=bindparam("task_id"))
)
# A timestamp before any other: a lease that was never set counts as expired.
NEVER = literal("-infinity").cast(DateTime(timezone=True))
# The most of a failure's message a failed job keeps (an exception's text can be a whole tensor dump).
ERROR_MESSAGE_CHARS = 2000
# Results per INSERT: a statement's bind parameters are capped at 65535 (PostgreSQL's protocol).
RESULTS_PER_STATEMENT = 2000
# The one size a job's model runs at, as the registry holds it once a worker loaded the model (an export made at a
# fixed size): what an attempt's job records as its size (NULL: the model runs at the size asked).
_FIXED_SIZE = (
    select(ModelRecord.fixed_imgsz)
    .where(
        ModelRecord.name == Job.model,
        ModelRecord.loaded_at.is_not(None),
        ModelRecord.fixed_imgsz.between(*IMGSZ_RANGE),
    )
    .scalar_subquery()
)


@dataclass(frozen=True)
class JobParams:
    """What a job asks of inference."""

    model: str
    conf: float = DEFAULT_CONF
    iou: float = DEFAULT_IOU
    imgsz: int | None = None


@dataclass(frozen=True)
class MediaParams:
    """What a job asks of its videos and large images (the ``jobs`` columns of the same names)."""

    sample_fps: float | None = None
    start_seconds: float | None = None
    end_seconds: float | None = None
    track: bool = False
    tiles: str = "off"


# A job that asks nothing of videos or large images (every media parameter at its default).
NO_MEDIA = MediaParams()


@dataclass
class NewUpload:
    """A file received by the API: its temp file, client filename and identified type."""

    incoming: IncomingFile
    filename: str
    info: FileInfo


@dataclass(frozen=True)
class FileReference:
    """A stored file the tenant holds, named by id in a submission (``file_ids``): no byte is sent again."""

    file: StoredFile
    filename: str


@dataclass(frozen=True)
class WorkItem:
    """One upload still waiting for a result: where its bytes are and their digest (its results' reuse key)."""

    upload_id: uuid.UUID
    path: str
    sha256: str


@dataclass(frozen=True)
class JobRun:
    """What a worker needs to (re)run a job: its lease, parameters and the uploads without results."""

    job_id: uuid.UUID
    lease_token: uuid.UUID
    params: JobParams
    total: int
    done: int
    attempts: int
    pending: list[WorkItem] = field(default_factory=list)
    tenant_id: uuid.UUID | None = None
    # Its uploads run as parts (jobs.parts): the attempt only sends their tasks.
    has_parts: bool = False


@dataclass(frozen=True)
class Provenance:
    """What produced a result (``jobs.reuse``): its reuse key and its parts, and whether it was taken from an
    earlier result instead of inferred."""

    reuse_key: str | None
    weights_sha256: str | None
    backend: str
    precision: str
    cached: bool = False


@dataclass(frozen=True)
class FileResult:
    """Inference output for one upload: detections, or an error for that file alone."""

    upload_id: uuid.UUID
    width: int | None
    height: int | None
    detections: list[dict[str, Any]]
    error: str | None = None
    provenance: Provenance | None = None


def create_job(
    session: Session,
    blobs: BlobStore,
    params: JobParams,
    uploads: Sequence[NewUpload],
    tenant_id: uuid.UUID | None,
    callback_url: str | None = None,
    references: Sequence[FileReference] = (),
    storage_quota: int | None = None,
    media: MediaParams = NO_MEDIA,
) -> Job:
    """Insert a queued job of ``tenant_id`` and its uploads, storing each file's bytes once (deduplicated);
    ``callback_url`` receives its ``job.finished`` webhook.

    The uploaded images come first, then ``references`` (files the tenant holds: checked again here, under their
    digest locks) in their order: a reference copies no byte and is always ``deduplicated``, under the tenant's
    name for it.
    Storage is deduplicated across tenants, but an upload says ``deduplicated`` only
    when its own tenant sent the same bytes before, so no tenant learns what another
    uploaded. With ``storage_quota``, the bytes of the files the tenant did not hold before must fit its
    quota (``files.quota.ensure_room``: the quota lock is then held until commit). The returned job has its
    uploads and their files loaded, so the caller can answer the client from it without reading the job
    back. Its first task id is its own id.

    The rows are written by two Core INSERTs (the job, then its uploads in one
    statement), not by flushing ORM objects: the job returned is built from the
    values written and is not in ``session`` (a caller that shows it later reads it).
    """
    # The references' digests too: a deletion frees a file's bytes only under its lock (jobs.deletion), so once
    # they are held a file still live stays so until this job, which refers to it, commits.
    lock_digests(session, [u.incoming.sha256 for u in uploads] + [r.file.sha256 for r in references])
    _check_still_held(session, tenant_id, references)
    if storage_quota is not None and tenant_id is not None:  # checked before any byte is installed
        new = _new_sizes(session, tenant_id, uploads)
        ensure_room(session, tenant_id, sum(new.values()), storage_quota, largest=max(new.values(), default=0))
    job_id = uuid.uuid4()
    rows: list[Upload] = []
    for position, upload in enumerate(uploads):
        stored, reused = store_incoming(session, blobs, upload.incoming, upload.info)
        seen = reused and (
            any(row.file_id == stored.id for row in rows) or tenant_has_file(session, tenant_id, stored.id)
        )
        rows.append(
            Upload(
                id=uuid.uuid4(),
                job_id=job_id,
                file_id=stored.id,
                file=stored,
                position=position,
                filename=upload.filename,
                deduplicated=seen,
            )
        )
    rows += [
        Upload(
            id=uuid.uuid4(),
            job_id=job_id,
            file_id=reference.file.id,
            file=reference.file,
            position=position,
            filename=reference.filename,
            deduplicated=True,
        )
        for position, reference in enumerate(references, start=len(rows))
    ]
    job = Job(
        id=job_id,
        status="queued",
        model=params.model,
        conf=params.conf,
        iou=params.iou,
        imgsz=params.imgsz,
        total_files=len(rows),
        task_id=str(job_id),
        tenant_id=tenant_id,
        callback_url=callback_url,
        sample_fps=media.sample_fps,
        start_seconds=media.start_seconds,
        end_seconds=media.end_seconds,
        track=media.track,
        tiles=media.tiles,
        uploads=rows,
    )
    job.created_at = session.execute(_INSERT_JOB, _columns_of(job, _JOB_COLUMNS)).scalar_one()
    if rows:
        session.execute(_INSERT_UPLOADS, [_columns_of(row, _UPLOAD_COLUMNS) for row in rows])
    # What the database's defaults wrote: every ``now()`` of one transaction is its start time.
    job.done_files = job.attempts = job.done_frames = job.failed_frames = 0
    for row in rows:
        row.created_at = job.created_at
    return job


def _check_still_held(session: Session, tenant_id: uuid.UUID | None, references: Sequence[FileReference]) -> None:
    """Under the references' digest locks, the one check that each is still a live file the tenant holds:
    :class:`UnknownFiles` for one it deleted meanwhile, :class:`files.errors.FileGone` for one whose bytes
    retention removed. A deletion or retention that commits later waits for this job, which then refers to it."""
    if not references:
        return
    held = held_files(session, tenant_id, [r.file.id for r in references])
    missing = [str(r.file.id) for r in references if r.file.id not in held]
    if missing:
        raise UnknownFiles(list(dict.fromkeys(missing)))
    gone = next((file_id for file_id, found in held.items() if found.file.deleted_at is not None), None)
    if gone is not None:
        raise FileGone(gone)


def _new_sizes(session: Session, tenant_id: uuid.UUID, uploads: Sequence[NewUpload]) -> dict[str, int]:
    """The size of each uploaded file, by digest, whose bytes the tenant does not hold live yet."""
    digests = {upload.incoming.sha256: upload.incoming.size for upload in uploads}
    if not digests:
        return {}
    held = held_file_ids(tenant_id).subquery()
    query = select(StoredFile.sha256).where(
        StoredFile.sha256.in_(list(digests)), StoredFile.deleted_at.is_(None), StoredFile.id.in_(select(held.c[0]))
    )
    for sha256 in session.scalars(query):
        digests.pop(sha256, None)
    return digests


def _columns_of(row: Job | Upload, columns: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in columns}


def tenant_has_file(session: Session, tenant_id: uuid.UUID | None, file_id: uuid.UUID) -> bool:
    """Whether a job of ``tenant_id`` has an upload of the stored file, or the tenant holds it of its own."""
    return bool(session.scalar(_TENANT_HAS_FILE, {"tenant_id": tenant_id, "file_id": file_id}))


def active_jobs(session: Session, tenant_id: uuid.UUID | None) -> int:
    """How many of the tenant's jobs are queued or running, counted under the tenant's lock (held until commit).

    Two statements: a count in the lock's own statement would read a snapshot taken before the lock was granted.
    """
    session.execute(_LOCK_TENANT, {"ns": TENANT_LOCK_NAMESPACE, "tenant": str(tenant_id)})
    return session.scalar(_COUNT_ACTIVE, {"tenant_id": tenant_id}) or 0


def mark_enqueued(session: Session, job_id: uuid.UUID, task_id: str) -> None:
    """Record that the job's task was sent under ``task_id`` (see :func:`jobs.dispatch.send_then_mark`).

    A plain UPDATE of the table, not of the ORM's ``Job``: it skips the ORM's
    bookkeeping on every submission, and so leaves a ``Job`` already in the session
    as it was; a caller that shows the job afterwards reads it again.
    """
    session.execute(_MARK_ENQUEUED, {"job_id": job_id, "task_id": task_id})


def withdraw_job(session: Session, job_id: uuid.UUID) -> None:
    """Remove a job that could not be enqueued (its uploads and results cascade), unless it was sent meanwhile."""
    session.execute(delete(Job).where(Job.id == job_id, Job.enqueued_at.is_(None)))


def resendable_jobs(session: Session, lease: timedelta, limit: int) -> list[tuple[uuid.UUID, str, str | None]]:
    """Unfinished jobs nothing is working on, oldest first, as ``(id, status, task_id)``, locked until commit.

    A running job whose lease expired (its worker died, or was cut off from the
    database), and a queued job whose task was not sent (or last sent) within a
    lease period: its message was lost, purged, or is still waiting behind a backlog
    (then a second message costs one skipped delivery). Others skip locked rows.
    """
    # A running job with parts holds no lease of its own: its parts hold theirs (jobs.parts.resendable_parts).
    expired = and_(_running_with_expired_lease(), ~select(JobPart.id).where(JobPart.job_id == Job.id).exists())
    unsent = and_(Job.status == "queued", func.coalesce(Job.enqueued_at, Job.created_at) < func.now() - lease)
    query = (
        select(Job.id, Job.status, Job.task_id)
        .where(or_(expired, unsent))
        .order_by(Job.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [(job_id, status, task_id) for job_id, status, task_id in session.execute(query)]


def begin_attempt(session: Session, job_id: uuid.UUID, lease: timedelta) -> JobRun | None:
    """Take the job's lease, mark it running and return its unfinished work.

    ``None`` when the job is unknown, finished or cancelled, or another attempt's
    lease is still alive (that attempt, or the reaper once the lease expires, carries on).
    When the registry knows its model runs at one fixed size, the job records that size from here on
    (:func:`record_run_size` when a worker finds it out later, on loading the model).
    """
    return begin_attempts(session, [job_id], lease)[0]


def begin_attempts(session: Session, job_ids: Sequence[uuid.UUID], lease: timedelta) -> list[JobRun | None]:
    """:func:`begin_attempt` for several jobs in two statements (a round's leader begins its mates so);
    each attempt gets a lease token of its own. One run (or ``None``) per id, in their order; an id
    given twice (two messages of one job) gets its run once, as a second :func:`begin_attempt` would."""
    if not job_ids:
        return []
    statement = (
        update(Job)
        .where(Job.id.in_(job_ids), or_(Job.status == "queued", _running_with_expired_lease()))
        .values(
            status="running",
            started_at=func.coalesce(Job.started_at, func.now()),
            attempts=Job.attempts + 1,
            lease_token=func.gen_random_uuid(),
            lease_expires_at=func.now() + lease,
            imgsz=func.coalesce(_FIXED_SIZE, Job.imgsz),
        )
        .returning(
            Job.id,
            Job.lease_token,
            Job.attempts,
            Job.model,
            Job.conf,
            Job.iou,
            Job.imgsz,
            Job.total_files,
            Job.tenant_id,
            select(JobPart.id).where(JobPart.job_id == Job.id).exists(),
        )
    )
    began = {row[0]: row[1:] for row in session.execute(statement)}
    pending: dict[uuid.UUID, list[WorkItem]] = {job_id: [] for job_id in began}
    if began:
        query = (
            select(Upload.job_id, Upload.id, StoredFile.path, StoredFile.sha256)
            .join(StoredFile, StoredFile.id == Upload.file_id)
            .outerjoin(Result, Result.upload_id == Upload.id)
            .where(Upload.job_id.in_(list(began)), Result.upload_id.is_(None))
            .order_by(Upload.job_id, Upload.position)
        )
        for job_id, upload_id, path, sha256 in session.execute(query):
            pending[job_id].append(WorkItem(upload_id, path, sha256))
    runs: list[JobRun | None] = []
    for job_id in job_ids:
        if job_id not in began:
            runs.append(None)
            continue
        token, attempts, model, conf, iou, imgsz, total, tenant_id, parted = began.pop(job_id)
        params = JobParams(model=model, conf=conf, iou=iou, imgsz=imgsz)
        left = [] if parted else pending[job_id]
        runs.append(JobRun(job_id, token, params, total, total - len(left), attempts, left, tenant_id, parted))
    return runs


def record_run_size(session: Session, job_id: uuid.UUID, size: int) -> None:
    """Record ``size`` (a :func:`jobs.catalog.run_size`) as the size the job runs at: its model runs at that one
    size, whatever the job asked (a worker found so on loading it, after the job's attempt began)."""
    session.execute(update(Job).where(Job.id == job_id, Job.imgsz.is_distinct_from(size)).values(imgsz=size))


def _running_with_expired_lease() -> ColumnElement[bool]:
    """A running job whose attempt's lease ran out (or was never set): nothing is working on it."""
    return and_(Job.status == "running", func.coalesce(Job.lease_expires_at, NEVER) < func.now())


def _holds_lease(job_id: uuid.UUID, token: uuid.UUID) -> ColumnElement[bool]:
    return and_(Job.id == job_id, Job.lease_token == token, Job.status == "running")


def renew_lease(session: Session, job_id: uuid.UUID, token: uuid.UUID, lease: timedelta) -> bool:
    """Extend the attempt's lease; False when it no longer holds the job (cancelled, or replaced)."""
    statement = update(Job).where(_holds_lease(job_id, token)).values(lease_expires_at=func.now() + lease)
    return session.execute(statement.returning(Job.id)).first() is not None


def record_results(
    session: Session,
    job_id: uuid.UUID,
    token: uuid.UUID,
    results: Sequence[FileResult],
    lease: timedelta,
) -> int | None:
    """Upsert an attempt's results (never duplicated) and renew its lease; :func:`finish_jobs` ends the job.

    Returns how many of the job's uploads now have a result, or ``None`` (writing
    nothing) when the attempt no longer holds the job.
    """
    if not renew_lease(session, job_id, token, lease):  # also locks the job's row until commit
        return None
    if results:
        _upsert_results(session, [_result_row(job_id, r) for r in results])
    done = session.scalar(select(func.count()).select_from(Result).where(Result.job_id == job_id)) or 0
    session.execute(update(Job).where(Job.id == job_id).values(done_files=done))
    return done


@dataclass(frozen=True)
class Finishing:
    """The last write of one attempt: its job, its lease token and the results it has not written yet."""

    job_id: uuid.UUID
    token: uuid.UUID
    results: Sequence[FileResult]


def finish_jobs(session: Session, finishing: Sequence[Finishing]) -> set[uuid.UUID]:
    """End each attempt's job as succeeded and store its last results: one UPDATE and one upsert for them all.

    The UPDATE is fenced by each attempt's lease token and locks the jobs' rows, so an
    attempt that no longer holds its job (cancelled in the meantime, or replaced) writes
    nothing. Every upload with a file has a result once its attempt finishes (the attempt
    began with the uploads that had none, and no other attempt could write since), so
    ``done_files`` is ``total_files`` but for the uploads whose file its owner deleted (a job
    retried after such a deletion). Returns the ids of the jobs finished.
    """
    if not finishing:
        return set()
    attempts = [(f.job_id, f.token) for f in finishing]
    deleted = (
        select(func.count())
        .select_from(Upload)
        .where(Upload.job_id == Job.id, Upload.file_id.is_(None))
        .scalar_subquery()
    )
    statement = (
        update(Job)
        .where(tuple_(Job.id, Job.lease_token).in_(attempts), Job.status == "running")
        .values(
            status="succeeded",
            done_files=Job.total_files - deleted,
            finished_at=func.now(),
            error_code=None,
            error_message=None,
            lease_token=None,
            lease_expires_at=None,
        )
        .returning(Job.id, Job.callback_url)
    )
    ended = {job_id: callback for job_id, callback in session.execute(statement)}
    rows = [_result_row(f.job_id, r) for f in finishing if f.job_id in ended for r in f.results]
    if rows:
        _upsert_results(session, rows)
    for job_id, callback in ended.items():
        if callback is not None:
            record_job_finished(session, job_id)
    return set(ended)


def renew_leases(session: Session, attempts: Sequence[tuple[uuid.UUID, uuid.UUID]], lease: timedelta) -> set[uuid.UUID]:
    """Extend the leases of several ``(job_id, token)`` attempts in one statement; the ids still held."""
    statement = (
        update(Job)
        .where(tuple_(Job.id, Job.lease_token).in_(attempts), Job.status == "running")
        .values(lease_expires_at=func.now() + lease)
        .returning(Job.id)
    )
    return set(session.scalars(statement))


def release_attempt(session: Session, job_id: uuid.UUID, token: uuid.UUID) -> bool:
    """Give a just-begun attempt back unrun: the job is queued again, as if this attempt never began.

    For a job a worker took into a round but that must run alone (see ``tasks/intake.py``);
    its message goes back to the queue. Returns whether the attempt still held the job.
    """
    statement = (
        update(Job)
        .where(_holds_lease(job_id, token))
        .values(status="queued", attempts=Job.attempts - 1, lease_token=None, lease_expires_at=None)
        .returning(Job.id)
    )
    return session.execute(statement).first() is not None


_RESULT_COLUMNS = (
    "width",
    "height",
    "detections",
    "error",
    "reuse_key",
    "weights_sha256",
    "backend",
    "precision",
    "cached",
)


def _result_row(job_id: uuid.UUID, result: FileResult) -> dict[str, Any]:
    made = result.provenance
    return {
        "upload_id": result.upload_id,
        "job_id": job_id,
        "width": result.width,
        "height": result.height,
        "detections": result.detections,
        "error": result.error,
        "reuse_key": made.reuse_key if made else None,
        "weights_sha256": made.weights_sha256 if made else None,
        "backend": made.backend if made else None,
        "precision": made.precision if made else None,
        "cached": made.cached if made else False,
    }


def _upsert_results(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert results, replacing any an earlier attempt wrote for the same upload (never duplicated), in
    statements of at most :data:`RESULTS_PER_STATEMENT` rows."""
    for start in range(0, len(rows), RESULTS_PER_STATEMENT):
        statement = insert(Result).values(rows[start : start + RESULTS_PER_STATEMENT])
        statement = statement.on_conflict_do_update(
            index_elements=[Result.upload_id], set_={c: statement.excluded[c] for c in _RESULT_COLUMNS}
        )
        session.execute(statement)


def kept_message(message: str) -> str:
    """A failure's message as a failed job keeps it: its first :data:`ERROR_MESSAGE_CHARS` characters."""
    return message[:ERROR_MESSAGE_CHARS]


def exception_message(exc: BaseException) -> str:
    """What a job that ``exc`` failed says about it: the exception's type and text, as the job keeps them."""
    return kept_message(f"{type(exc).__name__}: {exc}")


def fail_job(session: Session, job_id: uuid.UUID, code: str, message: str, token: uuid.UUID | None = None) -> bool:
    """Finish an unfinished job as failed with a machine-readable code; with ``token``, only if that attempt holds it.

    The job keeps the message as :func:`kept_message` cuts it. Returns whether the job was failed.
    """
    condition = _holds_lease(job_id, token) if token else and_(Job.id == job_id, Job.finished_at.is_(None))
    statement = (
        update(Job)
        .where(condition)
        .values(
            status="failed",
            finished_at=func.now(),
            error_code=code,
            error_message=kept_message(message),
            lease_token=None,
            lease_expires_at=None,
        )
        .returning(Job.id)
    )
    return _ended(session, statement)


def _ended(session: Session, statement: Update) -> bool:
    """Run an UPDATE that ends a job (``RETURNING`` its id); when it did, record the job's webhook."""
    row = session.execute(statement).first()
    if row is None:
        return False
    record_job_finished(session, row.id)
    return True


def cancel_job(session: Session, job_id: uuid.UUID, task_id: str | None = None) -> bool:
    """End a queued or running job as cancelled, keeping the results it has; with ``task_id`` (a revoke), only
    if that is the job's latest task and was sent. A revoke of an older message must not cancel a retried
    job, nor may one that arrives while a retry is between :func:`retry_job` (queued again under the old
    task id, ``enqueued_at`` cleared) and :func:`mark_enqueued` (the new task id, once sent).

    A running attempt notices at its next write or heartbeat, and stops. Returns whether the job was cancelled.
    """
    condition = and_(Job.id == job_id, Job.finished_at.is_(None))
    if task_id is not None:
        condition = and_(
            condition, func.coalesce(Job.task_id, cast(Job.id, Text)) == task_id, Job.enqueued_at.is_not(None)
        )
    statement = (
        update(Job)
        .where(condition)
        .values(status="cancelled", finished_at=func.now(), lease_token=None, lease_expires_at=None)
        .returning(Job.id)
    )
    return _ended(session, statement)


def retry_job(session: Session, job_id: uuid.UUID) -> bool:
    """Put a failed or cancelled job back in the queue, to process the files that have no result yet.

    Its attempts count from zero again and its next task gets a new id (workers
    remember revoked ids). Returns whether the job was requeued; the caller sends its task.
    """
    statement = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(("failed", "cancelled")))
        .values(
            status="queued",
            finished_at=None,
            error_code=None,
            error_message=None,
            attempts=0,
            enqueued_at=None,
        )
        .returning(Job.id)
    )
    return session.execute(statement).first() is not None


# A job's status, built once: building a statement is most of what reading it costs in Python, and
# POST /api/v1/predict reads it many times a second while it waits (jobs.waiting).
JOB_STATUS = select(Job.status).where(Job.id == bindparam("job_id"))


def job_status(session: Session, job_id: uuid.UUID) -> str | None:
    """The job's status now (None when there is no such job)."""
    return session.scalar(JOB_STATUS, {"job_id": job_id})

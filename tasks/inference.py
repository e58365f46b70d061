"""``tasks.inference.detect``: run a job's images through its model and store the results.

The message carries only the job id. The task is idempotent: a finished job is
left alone, and a half-done one resumes with the uploads that have no result yet
(results are upserted, so a redelivery never duplicates rows).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from storage.iterables import batched
from storage.jobs import JobRun, begin_attempt, fail_job, record_results
from storage.logs import job_context
from tasks import app, metrics
from tasks.detection import predict_batch
from tasks.model_pool import ModelUnavailable
from tasks.runtime import WorkerRuntime, get_runtime

log = logging.getLogger(__name__)


class DatabaseDisconnected(RuntimeError):
    """The database connection dropped, reported by psycopg2 without an error code (a plain ``DatabaseError``)."""


# The database or the storage volume briefly unavailable; anything else is a bug and fails at once.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, OSError, DatabaseDisconnected)
MAX_ATTEMPTS = 10


class JobTask(Task):
    """Marks the job failed once the task itself has failed for good.

    After a hard time limit this runs in the pool's parent process, so it uses
    the runtime's storage only and never touches the model pool.
    """

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        job_id = args[0] if args else kwargs.get("job_id")
        code = "time_limit" if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded) else "internal_error"
        metrics.job_finished("failed")
        try:
            with get_runtime().storage.session() as session:
                fail_job(session, uuid.UUID(job_id), code, f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("could not mark job failed", extra={"job_id": job_id})


@app.task(
    name="tasks.inference.detect",
    bind=True,
    base=JobTask,
    queue="inference",
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def detect(self: Task, job_id: str) -> dict[str, Any]:
    """Detect objects in every image of job ``job_id``."""
    with job_context(job_id):
        try:
            return _run_job(self, uuid.UUID(job_id))
        except DBAPIError as exc:
            if exc.connection_invalidated and not isinstance(exc, TRANSIENT_ERRORS):
                raise DatabaseDisconnected(str(exc)) from exc
            raise


def _run_job(task: Task, job_id: uuid.UUID) -> dict[str, Any]:
    runtime = get_runtime()
    with runtime.storage.session() as session:
        run = begin_attempt(session, job_id)
    if run is None:
        log.info("job already finished or unknown, nothing to do")
        return {"job_id": str(job_id), "status": "skipped"}
    if run.attempts > MAX_ATTEMPTS:
        return _fail(runtime, run, "too_many_attempts", f"gave up after {MAX_ATTEMPTS} attempts")
    try:
        model = runtime.models.get(run.params.model)
    except ModelUnavailable as exc:
        return _fail(runtime, run, "model_unavailable", str(exc))
    log.info("job started attempt=%d pending=%d total=%d", run.attempts, len(run.pending), run.total)
    report_progress(task, job_id, run.done, run.total)
    done = run.done
    batches = list(batched(run.pending, runtime.settings.inference_batch_size)) or [[]]
    for index, batch in enumerate(batches):
        started = time.perf_counter()
        results = predict_batch(model, runtime.models.device, runtime.storage.blobs.root, batch, run.params)
        metrics.batch_predicted(run.params.model, len(batch), time.perf_counter() - started)
        with runtime.storage.session() as session:
            done = record_results(session, job_id, results, finish=index == len(batches) - 1)
        report_progress(task, job_id, done, run.total)
    log.info("job succeeded done=%d total=%d", done, run.total)
    metrics.job_finished("succeeded")
    return {"job_id": str(job_id), "status": "succeeded", "done": done, "total": run.total}


def report_progress(task: Task, job_id: uuid.UUID, done: int, total: int) -> None:
    """Publish progress as the ``PROGRESS`` result state and as a ``task-progress`` event (Flower shows both).

    Best effort: the database holds the real progress, so a result backend or
    broker that is down must not fail the job.
    """
    try:
        task.update_state(state="PROGRESS", meta={"job_id": str(job_id), "done": done, "total": total})
        task.send_event("task-progress", done=done, total=total)
    except SoftTimeLimitExceeded:
        raise
    except Exception:
        log.warning("could not publish progress done=%d total=%d", done, total, exc_info=True)


def _fail(runtime: WorkerRuntime, run: JobRun, code: str, message: str) -> dict[str, Any]:
    log.warning("job failed code=%s message=%s", code, message)
    metrics.job_finished("failed")
    with runtime.storage.session() as session:
        fail_job(session, run.job_id, code, message)
    return {"job_id": str(run.job_id), "status": "failed", "error": code}

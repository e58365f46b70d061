"""``tasks.inference.detect``: run a job's images through its model and store the results, under a lease.

The message carries only the job id. An attempt begins by taking the job's lease
(``jobs.lifecycle.begin_attempt``); a job that is finished, cancelled, or held by
another live attempt is left alone. Results are written a few batches at a time, each
write fenced by the attempt's lease token and renewing the lease; a heartbeat renews it
between writes. Writes (and progress) follow a time budget (:mod:`tasks.pacing`): at
least every 2 s while images finish, per image when one takes longer; the last write
ends the job in one fenced UPDATE and one upsert. When a write or a
heartbeat finds the lease gone, the attempt stops at the next batch boundary: the job
was cancelled (Celery then shows REVOKED), or
another attempt took over after this one outlived its lease.

A small fresh job leads a *round* instead (:mod:`tasks.rounds`): it takes up to
``WORKER_ROUND_JOBS - 1`` more ready jobs and runs them all together. The task stores
no result: the job's state lives in PostgreSQL, and only a job that writes more than
once publishes progress.

Database (and storage) outages are retried in place with capped exponential
back-off for ``JOB_DATABASE_RETRY_SECONDS``; past that, the message is acknowledged
and the job left to beat's reaper, which re-sends it once its lease has expired.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from celery import Task, states
from celery.exceptions import Ignore, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_revoked
from sqlalchemy.orm import Session

from config.logs import job_context
from jobs.lifecycle import (
    FileResult,
    Finishing,
    JobRun,
    begin_attempt,
    cancel_job,
    exception_message,
    fail_job,
    finish_jobs,
    job_status,
    record_results,
    renew_leases,
)
from jobs.messages import DETECT_TASK
from tasks import app, metrics
from tasks.detection import predict_batch
from tasks.model_pool import ModelUnavailable
from tasks.outages import DatabaseOutage, ride_out_outages
from tasks.pacing import Pace
from tasks.revocations import was_revoked
from tasks.rounds import Round, can_join_round
from tasks.runtime import WorkerRuntime, get_runtime

log = logging.getLogger(__name__)

T = TypeVar("T")

# A job whose attempts keep dying (a message that kills its worker) fails on the attempt after this many.
MAX_ATTEMPTS = 10


class LeaseLost(RuntimeError):
    """This attempt no longer holds the job: it was cancelled, or another attempt took over."""


class JobTask(Task):
    """Marks the job failed once the task itself has failed for good (a bug, or a time limit).

    After a hard time limit this runs in the pool's parent process, so it uses the
    runtime's storage only and never touches the model pool. When the database is
    unreachable the job stays as it is, and the reaper re-sends it once its lease expires.
    """

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        job_id = args[0] if args else kwargs.get("job_id")
        code = "time_limit" if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded) else "internal_error"
        try:
            with get_runtime().storage.database.transaction() as session:
                failed = fail_job(session, uuid.UUID(job_id), code, exception_message(exc))
        except Exception:
            log.exception("could not mark the job failed; the reaper will re-send it", extra={"job_id": job_id})
            return
        if failed:
            metrics.job_finished("failed")


# No SUCCESS stored: the job's state lives in PostgreSQL, and the API reads it there (Flower reads events).
# REVOKED and FAILURE still are: a revoke of a queued message is known to later workers by it.
@app.task(name=DETECT_TASK, bind=True, base=JobTask, ignore_result=True, store_errors_even_if_ignored=True)
def detect(self: Task, job_id: str) -> dict[str, Any]:
    """Detect objects in every image of job ``job_id`` that has no result yet."""
    with job_context(job_id):
        attempt = Attempt(self, uuid.UUID(job_id), get_runtime())
        try:
            return attempt.run()
        except DatabaseOutage as exc:
            log.warning("giving the job back to the reaper: %s", exc)
            attempt.leave_for_reaper(exc)


class Attempt:
    """One attempt at one job, from taking its lease to the last write."""

    def __init__(self, task: Task, job_id: uuid.UUID, runtime: WorkerRuntime) -> None:
        self.task = task
        self.job_id = job_id
        self.runtime = runtime
        self.jobs = runtime.settings.jobs

    def database(self, work: Callable[[Session], T]) -> T:
        """``work`` in a transaction of its own, riding out outages."""

        def transaction() -> T:
            with self.runtime.storage.database.transaction() as session:
                return work(session)

        return ride_out_outages(transaction, self.jobs.database_retry_seconds)

    def run(self) -> dict[str, Any]:
        if was_revoked(self.task.request.id):  # revoked while no worker that knew of it was running
            self.database(lambda s: cancel_job(s, self.job_id, task_id=self.task.request.id))
            self.stop_as_revoked()
        run = self.database(lambda s: begin_attempt(s, self.job_id, self.jobs.lease))
        if run is None:
            return self._not_started()
        if run.attempts > MAX_ATTEMPTS:
            return self._fail(run, "too_many_attempts", f"gave up after {MAX_ATTEMPTS} attempts")
        log.info("job started attempt=%d pending=%d total=%d", run.attempts, len(run.pending), run.total)
        if self._leads_round(run):
            return Round(self, run).run()
        try:
            model = self.runtime.models.get(self.runtime.settings.registry_name(run.params.model) or run.params.model)
        except ModelUnavailable as exc:
            return self._fail(run, "model_unavailable", str(exc))
        try:
            with Heartbeat(self, [run]) as heartbeat:
                done = self._predict_all(run, model, heartbeat)
        except LeaseLost:
            return self.lease_lost()
        log.info("job succeeded done=%d total=%d", done, run.total)
        metrics.job_finished("succeeded")
        return {"job_id": str(self.job_id), "status": "succeeded", "done": done, "total": run.total}

    def _leads_round(self, run: JobRun) -> bool:
        """Whether this job runs in a round (:mod:`tasks.rounds`): rounds are on, and it is a small job on
        its first attempt and first delivery (a redelivered message may be one that killed a round)."""
        redelivered = (self.task.request.delivery_info or {}).get("redelivered", False)
        worker = self.runtime.settings.worker
        return worker.round_jobs > 1 and not redelivered and can_join_round(run, worker.inference_batch_size)

    def _predict_all(self, run: JobRun, model: Any, heartbeat: Heartbeat) -> int:
        """Predict the pending images, writing results on the time budget of :mod:`tasks.pacing`.

        Progress is published with each write but the last, so a job done in one write publishes none;
        one that did publish stores its end state too, so the result backend never shows it running.
        """
        done = run.done
        reported = False
        pending = run.pending
        root = self.runtime.storage.blobs.root
        pace = Pace(self.runtime.settings.worker.inference_batch_size)
        held: list[FileResult] = []
        position = 0
        while True:
            if heartbeat.lost.is_set():
                raise LeaseLost
            batch = pending[position : position + pace.next_size()]
            position += len(batch)
            if batch:
                started = time.perf_counter()
                held += ride_out_outages(
                    lambda batch=batch: predict_batch(model, root, batch, run.params),
                    self.jobs.database_retry_seconds,
                )
                seconds = time.perf_counter() - started
                pace.predicted(len(batch), seconds)
                metrics.batch_predicted(run.params.model, len(batch), seconds)
            remaining = len(pending) - position
            if remaining == 0:
                finishing = Finishing(self.job_id, run.lease_token, held)
                if not self.database(lambda s, last=finishing: finish_jobs(s, [last])):
                    raise LeaseLost
                if reported:
                    report_progress(self.task, self.job_id, run.total, run.total, state=states.SUCCESS)
                return run.total
            if pace.write_now(remaining):
                recorded = self.database(
                    lambda s, results=held: record_results(s, self.job_id, run.lease_token, results, self.jobs.lease)
                )
                if recorded is None:
                    raise LeaseLost
                done, held = recorded, []
                pace.wrote()
                report_progress(self.task, self.job_id, done, run.total)
                reported = True

    def _not_started(self) -> dict[str, Any]:
        status = self.database(lambda s: job_status(s, self.job_id))
        if status == "cancelled":
            self.stop_as_revoked()
        reason = "another attempt holds its lease" if status == "running" else f"it is {status or 'unknown'}"
        log.info("job not started: %s", reason)
        return {"job_id": str(self.job_id), "status": "skipped"}

    def lease_lost(self) -> dict[str, Any]:
        status = self.database(lambda s: job_status(s, self.job_id))
        if status == "cancelled":
            log.info("job cancelled: stopped at a batch boundary")
            self.stop_as_revoked()
        log.warning("lease lost to another attempt (status=%s): stopped without writing", status)
        return {"job_id": str(self.job_id), "status": "superseded"}

    def _fail(self, run: JobRun, code: str, message: str) -> dict[str, Any]:
        log.warning("job failed code=%s message=%s", code, message)
        if self.database(lambda s: fail_job(s, run.job_id, code, message, token=run.lease_token)):
            metrics.job_finished("failed")
        return {"job_id": str(run.job_id), "status": "failed", "error": code}

    def stop_as_revoked(self) -> NoReturn:
        """End the task as REVOKED (result state and event, so Flower stops showing progress); ack the message."""
        try:
            self.task.backend.mark_as_revoked(self.task.request.id, reason="cancelled", request=self.task.request)
            self.task.send_event("task-revoked", terminated=False, signum=None, expired=False)
        except Exception:
            log.warning("could not publish the task's REVOKED state", exc_info=True)
        raise Ignore() from None

    def leave_for_reaper(self, exc: Exception) -> NoReturn:
        """Acknowledge the message and leave the job to the reaper; the task shows RETRY meanwhile."""
        try:
            self.task.backend.mark_as_retry(self.task.request.id, exc, request=self.task.request)
            self.task.send_event("task-retried", exception=repr(exc), traceback="")
        except Exception:
            log.warning("could not publish the task's RETRY state", exc_info=True)
        raise Ignore() from None


class Heartbeat:
    """Renews the leases of an attempt (or of a round's attempts, in one statement) every third of a lease
    in a thread, so a long batch keeps the jobs.

    Sets ``lost`` when a renewal finds a lease gone (cancelled or taken over), and stops renewing it;
    an attempt stops at its next batch boundary (a round's end is fenced job by job). A renewal that
    fails for an outage is only logged: the next one tries again, and the writes themselves ride it out.
    """

    def __init__(self, attempt: Attempt, runs: list[JobRun]) -> None:
        self.attempt = attempt
        self.held = [(run.job_id, run.lease_token) for run in runs]
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{runs[0].job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        jobs = self.attempt.jobs
        database = self.attempt.runtime.storage.database
        while self.held and not self._stop.wait(jobs.lease_seconds / 3):
            try:
                with database.transaction() as session:
                    still = renew_leases(session, self.held, jobs.lease)
            except Exception as exc:
                log.warning("could not renew the lease: %s", exc, extra={"job_id": str(self.held[0][0])})
                continue
            if len(still) < len(self.held):
                self.lost.set()
                self.held = [attempt for attempt in self.held if attempt[0] in still]


def report_progress(task: Task, job_id: uuid.UUID, done: int, total: int, state: str = "PROGRESS") -> None:
    """Publish progress as the ``PROGRESS`` result state and as a ``task-progress`` event (Flower shows both);
    with ``state=SUCCESS``, only the end state, over the last PROGRESS.

    Best effort: the database holds the real progress, so a result backend or
    broker that is down must not fail the job.
    """
    meta = {"job_id": str(job_id), "done": done, "total": total}
    try:
        task.update_state(state=state, meta=meta)
        if state == "PROGRESS":
            task.send_event("task-progress", done=done, total=total)
    except SoftTimeLimitExceeded:
        raise
    except Exception:
        log.warning("could not publish progress done=%d total=%d", done, total, exc_info=True)


@task_revoked.connect
def _cancel_revoked_job(sender: Task | None = None, request: Any = None, terminated: bool = False, **_: object) -> None:
    """``celery control revoke`` (Flower's buttons too) of a job's task: the job ends cancelled.

    Runs in the worker's main process, for a queued message it discards and for a
    running task it terminated. Only a revoke of the job's latest task counts, so
    revoking an old message never cancels a retried job.
    """
    if getattr(sender, "name", None) != DETECT_TASK or request is None or not request.args:
        return
    job_id = str(request.args[0])
    with job_context(job_id):
        try:
            with get_runtime().storage.database.transaction() as session:
                cancelled = cancel_job(session, uuid.UUID(job_id), task_id=request.id)
        except Exception:
            log.exception("could not mark the revoked job cancelled; the reaper will reconcile it")
            return
        if cancelled:
            metrics.job_finished("cancelled")
            log.warning("job cancelled: its task was %s", "terminated" if terminated else "revoked")

"""``tasks.detection.detect``: run a job's images through its model and store the results, under a lease.

The message carries only the job id. An attempt begins by taking the job's lease
(``jobs.lifecycle.begin_attempt``); a job that is finished, cancelled, or held by another live
attempt is left alone. A job with parts (a video, a tiled image: :mod:`jobs.parts`) only sends its
parts' tasks (:mod:`tasks.parts`), which run it. Any other job runs through this process's pipeline
(:mod:`tasks.pipeline`): alone, or leading a round of more ready jobs when it is small and fresh (:mod:`tasks.intake`).
Either way its results are written on the pace's time budget, each write fenced by the lease, and
the last write ends the job. When a write or the heartbeat finds the lease gone, the job stops at
the next batch boundary: it was cancelled (Celery then shows REVOKED), or another attempt took over
after this one outlived its lease.

A job records the size it runs at. When its model runs at one fixed size (an export made so) that is found
out only as the model loads, after the job's attempt began (``jobs.lifecycle.begin_attempts`` applies a size
the registry knows already), the job records it before it runs, or, taken into a round, when the round ends.

The task stores no result: the job's state lives in PostgreSQL, and only a job that writes more
than once publishes progress (:mod:`tasks.reporting`).

Database (and storage) outages are retried in place with capped exponential back-off for
``JOB_DATABASE_RETRY_SECONDS``; past that, the message is acknowledged and the job left to beat's
reaper, which re-sends it once its lease has expired.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any, NoReturn

from celery import Celery, Task, shared_task
from celery.exceptions import Ignore, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_revoked

from config.logs import job_context
from jobs.lifecycle import (
    JobRun,
    begin_attempt,
    cancel_job,
    exception_message,
    fail_job,
    job_status,
)
from jobs.messages import DETECT_TASK
from jobs.parts import parts_to_send, release_job_lease
from tasks import metrics
from tasks.intake import Mailbox, Mates, can_join_round
from tasks.outages import DatabaseOutage
from tasks.parts import send_parts
from tasks.pipeline import FAILED, SUCCEEDED, Member, Pipeline
from tasks.reporting import TaskReporter
from tasks.revocations import was_revoked
from tasks.runtime import WorkerRuntime, runtime_of

log = logging.getLogger(__name__)

# A job whose attempts keep dying (a message that kills its worker) fails on the attempt after this many.
MAX_ATTEMPTS = 10


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
            with runtime_of(self.app).storage.database.transaction() as session:
                failed = fail_job(session, uuid.UUID(job_id), code, exception_message(exc))
        except Exception:
            log.exception("could not mark the job failed; the reaper will re-send it", extra={"job_id": job_id})
            return
        if failed:
            metrics.job_finished("failed")


# No SUCCESS stored: the job's state lives in PostgreSQL, and the API reads it there (Flower reads events).
# REVOKED and FAILURE still are: a revoke of a queued message is known to later workers by it.
@shared_task(name=DETECT_TASK, bind=True, base=JobTask, ignore_result=True, store_errors_even_if_ignored=True)
def detect(self: Task, job_id: str) -> dict[str, Any]:
    """Detect objects in every image of job ``job_id`` that has no result yet."""
    with job_context(job_id):
        attempt = Attempt(self, uuid.UUID(job_id), runtime_of(self.app))
        try:
            return attempt.run()
        except DatabaseOutage as exc:
            log.warning("giving the job back to the reaper: %s", exc)
            attempt.leave_for_reaper(exc)


class Attempt:
    """One attempt at one job, from taking its lease to its end: the Celery side of its pipeline."""

    def __init__(self, task: Task, job_id: uuid.UUID, runtime: WorkerRuntime) -> None:
        self.task = task
        self.job_id = job_id
        self.runtime = runtime

    def run(self) -> dict[str, Any]:
        transaction = self.runtime.transaction
        if was_revoked(self.task.app, self.task.request.id):  # revoked while no worker that knew of it ran
            transaction(lambda s: cancel_job(s, self.job_id, task_id=self.task.request.id))
            self.stop_as_revoked()
        run = transaction(lambda s: begin_attempt(s, self.job_id, self.runtime.settings.jobs.lease))
        if run is None:
            return self._not_started()
        if run.attempts > MAX_ATTEMPTS:
            return self._fail(run, "too_many_attempts", f"gave up after {MAX_ATTEMPTS} attempts")
        if run.has_parts:
            return self._dispatch(run)
        run = self._at_run_size(run)
        log.info("job started attempt=%d pending=%d total=%d", run.attempts, len(run.pending), run.total)
        leader = Member(self.task.request.id, run)
        reporter = TaskReporter(self.task, leader)
        mates = reporter.mates = self._mates(reporter) if self._leads_round(run) else None
        settings, storage = self.runtime.settings, self.runtime.storage
        pipeline = Pipeline(settings, self.runtime.models, storage.blobs.root, transaction, reporter, mates)
        try:
            members = pipeline.run(leader)
        except DatabaseOutage:
            if mates is not None:
                mates.settle_rest(requeue=False)  # their leases stand: the reaper re-sends them
            raise
        except BaseException:
            if mates is not None:
                mates.settle_rest(requeue=True)
            raise
        for mate in members[1:]:  # taken into the round: its model may have loaded for it only then
            with job_context(str(mate.job_id)):
                self._at_run_size(mate.run)
        if leader.outcome == SUCCEEDED:
            log.info("job succeeded done=%d total=%d", run.total, run.total)
            return {"job_id": str(self.job_id), "status": SUCCEEDED, "total": run.total}
        if leader.outcome == FAILED:
            code, message = leader.failure or ("internal_error", "")
            log.warning("job failed code=%s message=%s", code, message)
            return {"job_id": str(self.job_id), "status": FAILED, "error": code, "message": message}
        return self.lease_lost()

    def _at_run_size(self, run: JobRun) -> JobRun:
        """``run`` at the one size its model runs at, if it has one (``WorkerRuntime.at_run_size``)."""
        return replace(run, params=self.runtime.at_run_size(run.job_id, run.params))

    def _dispatch(self, run: JobRun) -> dict[str, Any]:
        """A job with parts: send the task of each part no message carries yet, then leave the job to its parts."""
        transaction = self.runtime.transaction
        parts = transaction(lambda s: parts_to_send(s, run.job_id))
        send_parts(self.task.app, run.job_id, parts, transaction)
        transaction(lambda s: release_job_lease(s, run.job_id, run.lease_token))
        log.info("job dispatched parts=%d", len(parts))
        return {"job_id": str(self.job_id), "status": "dispatched", "parts": len(parts)}

    def _leads_round(self, run: JobRun) -> bool:
        """Whether this job leads a round: rounds are on, and it is a small job on its first attempt and
        first delivery (a redelivered message may be one that killed a round)."""
        redelivered = (self.task.request.delivery_info or {}).get("redelivered", False)
        worker = self.runtime.settings.worker
        return worker.round_jobs > 1 and not redelivered and can_join_round(run, worker.inference_batch_size)

    def _mates(self, reporter: TaskReporter) -> Mates:
        return Mates(
            mailbox(self.task.app),
            self.runtime.transaction,
            self.runtime.settings.jobs.lease,
            self.runtime.settings.worker.inference_batch_size,
            reporter.send_events,
        )

    def _not_started(self) -> dict[str, Any]:
        status = self.runtime.transaction(lambda s: job_status(s, self.job_id))
        if status == "cancelled":
            self.stop_as_revoked()
        reason = "another attempt holds its lease" if status == "running" else f"it is {status or 'unknown'}"
        log.info("job not started: %s", reason)
        return {"job_id": str(self.job_id), "status": "skipped"}

    def lease_lost(self) -> dict[str, Any]:
        status = self.runtime.transaction(lambda s: job_status(s, self.job_id))
        if status == "cancelled":
            log.info("job cancelled: stopped at a batch boundary")
            self.stop_as_revoked()
        log.warning("lease lost to another attempt (status=%s): stopped without writing", status)
        return {"job_id": str(self.job_id), "status": "superseded"}

    def _fail(self, run: JobRun, code: str, message: str) -> dict[str, Any]:
        log.warning("job failed code=%s message=%s", code, message)
        if self.runtime.transaction(lambda s: fail_job(s, run.job_id, code, message, token=run.lease_token)):
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


def mailbox(app: Celery) -> Mailbox:
    """This process's mailbox: one channel, opened on first use, kept for the process's rounds."""
    runtime = runtime_of(app)
    if runtime.mailbox is None:
        runtime.mailbox = Mailbox(app)
    return runtime.mailbox


def init_app(app: Celery) -> None:
    """Connect the worker's revoke handler for ``app``'s detect tasks."""

    def cancel_revoked_job(
        sender: Task | None = None, request: Any = None, terminated: bool = False, **_: object
    ) -> None:
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
                with runtime_of(app).storage.database.transaction() as session:
                    cancelled = cancel_job(session, uuid.UUID(job_id), task_id=request.id)
            except Exception:
                log.exception("could not mark the revoked job cancelled; the reaper will reconcile it")
                return
            if cancelled:
                metrics.job_finished("cancelled")
                log.warning("job cancelled: its task was %s", "terminated" if terminated else "revoked")

    task_revoked.connect(cancel_revoked_job, weak=False)

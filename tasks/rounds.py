"""Several jobs per round: a worker process that starts a small job runs up to ``WORKER_ROUND_JOBS`` ready
jobs together, their images in shared ``predict`` calls and their ends in one transaction.

Why: besides inference, a small job costs a worker its bookkeeping (a transaction to start, one to end,
the ack and the next prefetch), and a batch of one image wastes what a batch of eight costs about the
same to predict. A round fills the batches and shares the bookkeeping.

How (docs/job-lifecycle.md, "Several jobs per round"):

- The *leader* is the job whose message the worker's consumer delivered: a fresh job (first attempt,
  first delivery) with at most ``INFERENCE_BATCH_SIZE`` images left, at no more than the default
  inference size (640). Any other job runs alone, its writes and progress paced.
- The leader takes up to N-1 more ready messages from its queue with ``basic_get`` on a channel of its
  process's own (:class:`Mailbox`), never waiting: the consumer keeps its prefetch of one, and the round
  is the bounded prefetch. Each mate begins its own attempt (its own lease). A mate that could not lead
  a round (a retried or larger job) is given back unrun (``release_attempt``, message requeued) and
  runs alone on its next delivery.
- One heartbeat renews every member's lease in one statement. Images are predicted in batches of the
  batch size, per model and parameters; a job's boxes do not depend on its round-mates (each image is
  letterboxed as if alone, ``inference/backends.py``).
- A poison job fails alone: a shared call that raises is redone job by job, and only a job whose own
  call raises fails (``internal_error``); a model that cannot load fails its jobs only.
- The ends are written in one transaction (``finish_jobs``: one UPDATE fenced by each lease token, one
  upsert of all results), then each mate's message is acknowledged. A member cancelled meanwhile is
  fenced out, writes nothing, and shows REVOKED.
- At-least-once: a mate's message is acknowledged only after its job's end is committed. A process killed
  mid-round drops its channel, and RabbitMQ redelivers the mates' messages (and the leader's:
  ``task_reject_on_worker_lost``). Their leases make those deliveries wait for the reaper, as after any
  killed worker, and the reaper's re-sent jobs are retried attempts, which run alone: a job that kills
  its process cannot take its round-mates with it a second time. An unexpected error requeues the
  mates not yet acknowledged (their redeliveries run alone).

``celery-batches`` was not used: it acknowledges a whole batch even when the batch function raises
(one poison job loses its mates' messages), and has a known hang after a broker reconnect.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from kombu import Connection, Message

import celery_config
from inference.defaults import DEFAULT_INFERENCE_SIZE
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
    release_attempt,
)
from jobs.messages import DETECT_TASK
from tasks import metrics
from tasks.detection import predict_batch
from tasks.model_pool import ModelUnavailable
from tasks.outages import DatabaseOutage, ride_out_outages
from tasks.revocations import was_revoked

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tasks.inference import Attempt

log = logging.getLogger(__name__)

INFERENCE_QUEUE = celery_config.QUEUES[0]


def can_join_round(run: JobRun, batch_size: int) -> bool:
    """Whether a job may run in a round: a first attempt with at most one batch of images left, at no more
    than the default inference size. A slower job (a larger size) runs alone, paced, so its progress and
    its round-mates' ends are never held up by it (``tasks/pacing.py``)."""
    fast = run.params.imgsz is None or run.params.imgsz <= DEFAULT_INFERENCE_SIZE
    return fast and run.attempts == 1 and 0 < len(run.pending) <= batch_size


class Mailbox:
    """This process's own channel to the broker, from which a round's leader takes its mates' messages."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._connection: Connection | None = None

    def take(self, count: int) -> list[Message]:
        """Up to ``count`` messages ready now on the inference queue, unacknowledged; none when the broker
        is unreachable (the round is then the leader alone)."""
        taken: list[Message] = []
        try:
            if self._connection is None:
                self._connection = self.app.connection_for_read()
            queue = INFERENCE_QUEUE(self._connection.default_channel)
            while len(taken) < count and (message := queue.get(no_ack=False)) is not None:
                taken.append(message)
        except Exception:
            log.warning("could not take round-mates from the broker", exc_info=True)
            self.close()
        return taken

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = None


_mailbox: Mailbox | None = None


def mailbox(app: Celery) -> Mailbox:
    global _mailbox
    if _mailbox is None:
        _mailbox = Mailbox(app)
    return _mailbox


def settle(message: Message, requeue: bool = False) -> None:
    """Acknowledge a mate's message (or give it back to the queue); a broker that is gone redelivers it."""
    try:
        message.reject(requeue=True) if requeue else message.ack()
    except Exception:
        log.warning("could not settle a round-mate's message; it will be redelivered", exc_info=True)


@dataclass
class Member:
    """One job of a round: its task id, its attempt, and its message (``None`` for the leader's)."""

    task_id: str
    run: JobRun
    message: Message | None = None
    results: list[FileResult] = field(default_factory=list)
    failure: tuple[str, str] | None = None


class Round:
    """A leader's round: take mates, predict every member's images, end them all in one transaction."""

    def __init__(self, attempt: Attempt, leader: JobRun) -> None:
        self.attempt = attempt
        self.task = attempt.task
        self.runtime = attempt.runtime
        self.worker = attempt.runtime.settings.worker
        self.leader = Member(attempt.task.request.id, leader)
        self.unsettled: list[Message] = []

    def run(self) -> dict[str, Any]:
        self.unsettled = mailbox(self.task.app).take(self.worker.round_jobs - 1)
        try:
            members = [self.leader, *self._begin_mates(self.unsettled)]
            from tasks.inference import Heartbeat

            started = time.perf_counter()
            with Heartbeat(self.attempt, [m.run for m in members]):
                self._predict(members)
            ended, failed = self.attempt.database(lambda s: self._end(s, members))
        except DatabaseOutage:
            self._settle_rest(requeue=False)  # their leases stand: the reaper re-sends them
            raise
        except BaseException:
            self._settle_rest(requeue=True)
            raise
        self._report(members, ended, failed, time.perf_counter() - started)
        if self.leader.run.job_id in failed:
            code, message = self.leader.failure or ("internal_error", "")
            return {"job_id": str(self.leader.run.job_id), "status": "failed", "error": code, "message": message}
        if self.leader.run.job_id not in ended:
            return self.attempt.lease_lost()
        return {"job_id": str(self.leader.run.job_id), "status": "succeeded", "round": len(members)}

    def _begin_mates(self, messages: Sequence[Message]) -> list[Member]:
        """Begin an attempt for each mate that is a fresh detect job; give the others back."""
        wanted: list[tuple[str, uuid.UUID, Message]] = []
        for message in messages:
            task_id, job_id = _detect_job(message)
            if job_id is None:
                self._settle(message, requeue=True)
            elif was_revoked(task_id):
                self.attempt.database(lambda s, job_id=job_id, task_id=task_id: cancel_job(s, job_id, task_id=task_id))
                self._events("task-revoked", {task_id: {"terminated": False, "signum": None, "expired": False}})
                self._settle(message)
            else:
                wanted.append((task_id, job_id, message))
        lease = self.attempt.jobs.lease
        runs = self.attempt.database(lambda s: [begin_attempt(s, job_id, lease) for _, job_id, _ in wanted])
        members, given_back = [], []
        for (task_id, job_id, message), run in zip(wanted, runs, strict=True):
            if run is None:  # finished, cancelled, or held by a live attempt
                log.info("round-mate not started task_id=%s", task_id, extra={"job_id": str(job_id)})
                self._settle(message)
            elif can_join_round(run, self.worker.inference_batch_size):
                members.append(Member(task_id, run, message))
            else:
                given_back.append((run, message))
        if given_back:
            self.attempt.database(lambda s: [release_attempt(s, r.job_id, r.lease_token) for r, _ in given_back])
            for _, message in given_back:
                self._settle(message, requeue=True)
        self._events(
            "task-started", {m.task_id: {"name": DETECT_TASK, "args": repr([str(m.run.job_id)])} for m in members}
        )
        return members

    def _predict(self, members: Sequence[Member]) -> None:
        """Each member's results, or its failure: per model and parameters, and job by job when a shared call fails."""
        groups: dict[Any, list[Member]] = defaultdict(list)
        for member in members:
            groups[member.run.params].append(member)
        for params, group in groups.items():
            try:
                model = self.runtime.models.get(self.runtime.settings.registry_name(params.model) or params.model)
            except ModelUnavailable as exc:
                for member in group:
                    member.failure = ("model_unavailable", str(exc))
                continue
            try:
                self._predict_together(model, group)
            except (DatabaseOutage, SoftTimeLimitExceeded):
                raise
            except Exception as exc:
                if len(group) == 1:
                    group[0].failure = _failure(exc)
                    continue
                log.warning("a round's shared predict call failed: predicting its jobs one by one", exc_info=True)
                for member in group:
                    try:
                        self._predict_together(model, [member])
                    except (DatabaseOutage, SoftTimeLimitExceeded):
                        raise
                    except Exception as exc:
                        member.failure = _failure(exc)

    def _predict_together(self, model: Any, group: Sequence[Member]) -> None:
        items = [(member, item) for member in group for item in member.run.pending]
        params = group[0].run.params
        root = self.runtime.storage.blobs.root
        size = self.worker.inference_batch_size
        found: list[FileResult] = []
        for start in range(0, len(items), size):
            batch = [item for _, item in items[start : start + size]]
            began = time.perf_counter()
            found += ride_out_outages(
                lambda batch=batch: predict_batch(model, root, batch, params), self.attempt.jobs.database_retry_seconds
            )
            metrics.batch_predicted(params.model, len(batch), time.perf_counter() - began)
        for member in group:
            member.results = []
        for (member, _), result in zip(items, found, strict=True):
            member.results.append(result)

    def _end(self, session: Session, members: Sequence[Member]) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        """One transaction: members that predicted succeed, the others fail, each only while it holds its lease."""
        finishing = [Finishing(m.run.job_id, m.run.lease_token, m.results) for m in members if m.failure is None]
        ended = finish_jobs(session, finishing)
        failed = {
            m.run.job_id
            for m in members
            if m.failure is not None and fail_job(session, m.run.job_id, *m.failure, token=m.run.lease_token)
        }
        return ended, failed

    def _report(self, members: Sequence[Member], ended: set[uuid.UUID], failed: set[uuid.UUID], seconds: float) -> None:
        """Metrics, log, the mates' task events; then acknowledge the mates' messages."""
        images = sum(len(m.run.pending) for m in members)
        log.info("round finished jobs=%d images=%d seconds=%.3f", len(members), images, seconds)
        events: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for member in members:
            job_id = member.run.job_id
            if job_id in ended:
                metrics.job_finished("succeeded")
                outcome = {"job_id": str(job_id), "status": "succeeded"}
                events["task-succeeded"][member.task_id] = {"result": repr(outcome), "runtime": seconds}
            elif job_id in failed:
                metrics.job_finished("failed")
                code, message = member.failure or ("internal_error", "")
                log.warning("job failed in a round code=%s message=%s", code, message, extra={"job_id": str(job_id)})
                events["task-failed"][member.task_id] = {"exception": f"{code}: {message}", "traceback": ""}
            else:
                status = self.attempt.database(lambda s, job_id=job_id: job_status(s, job_id))
                log.info("round-mate stopped without writing (status=%s)", status, extra={"job_id": str(job_id)})
                events["task-revoked"][member.task_id] = {"terminated": False, "signum": None, "expired": False}
        for kind, fields in events.items():
            self._events(kind, {task_id: f for task_id, f in fields.items() if task_id != self.leader.task_id})
        self._settle_rest(requeue=False)

    def _events(self, kind: str, fields_by_task: dict[str, dict[str, Any]]) -> None:
        """Task events for the mates, whose messages the worker never saw, so Flower shows them (best effort)."""
        if not fields_by_task:
            return
        try:
            with self.task.app.events.default_dispatcher(hostname=self.task.request.hostname) as dispatcher:
                for task_id, fields in fields_by_task.items():
                    dispatcher.send(kind, uuid=task_id, **fields)
        except Exception:
            log.warning("could not publish round-mates' %s events", kind, exc_info=True)

    def _settle(self, message: Message, requeue: bool = False) -> None:
        settle(message, requeue)
        self.unsettled.remove(message)

    def _settle_rest(self, requeue: bool) -> None:
        for message in list(self.unsettled):
            self._settle(message, requeue)


def _failure(exc: Exception) -> tuple[str, str]:
    log.warning("a job's predict call failed", exc_info=exc)
    return "internal_error", exception_message(exc)


def _detect_job(message: Message) -> tuple[str, uuid.UUID | None]:
    """The task id and job id of a detect task's message; no job id for any other message."""
    headers = message.headers or {}
    try:
        args = message.decode()[0]
        job_id = uuid.UUID(str(args[0])) if headers.get("task") == DETECT_TASK else None
    except Exception:
        job_id = None
    return str(headers.get("id")), job_id

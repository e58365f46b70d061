"""The pipeline's take stage for a round: more ready jobs from the broker, each under its own lease.

A small fresh job leads a round (:func:`can_join_round`): while its pipeline wants work
(:mod:`tasks.pipeline`) it takes the next messages of the inference queue with ``basic_get`` on this
process's own channel (:class:`Mailbox`), never waiting: Celery's consumer keeps its prefetch of one
message per process, and the round's bound on held jobs (``WORKER_ROUND_JOBS``) is the prefetch.
``basic_get`` was kept over a second consumer with a prefetch window: it takes only what the
pipeline has room for at the moment it has room, so a message never waits in one process's buffer
while another process idles, and it costs under a millisecond a message here
(docs/performance.md).

Each mate begins its own attempt. A message that is not a detect task, or whose job may not join
(a retried or larger job, or one at a larger size), is given back (its attempt released, the message
requeued) and the round takes no more: it runs alone on its next delivery. A mate whose task was
revoked while queued ends cancelled; one that is finished, or held by a live attempt, is acknowledged
and left alone. A mate's message is acknowledged only once its job's end is committed
(:mod:`tasks.reporting`): a process killed mid-round drops its channel and RabbitMQ redelivers them.

``celery-batches`` was not used: it acknowledges a whole batch even when the batch function raises
(one poison job loses its mates' messages), and has a known hang after a broker reconnect.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import Celery
from kombu import Connection, Message

import celery_config
from inference.defaults import DEFAULT_INFERENCE_SIZE
from jobs.lifecycle import JobRun, begin_attempts, cancel_job, release_attempt
from jobs.messages import DETECT_TASK
from tasks.pipeline import Member, Transaction
from tasks.revocations import revoked_among

log = logging.getLogger(__name__)

INFERENCE_QUEUE = celery_config.QUEUES[0]


def can_join_round(run: JobRun, batch_size: int) -> bool:
    """Whether a job may run in a round: a first attempt with at most one batch of images left, at no more
    than the default inference size. A slower job (a larger size) runs alone, paced, so its progress and
    its round-mates' ends are never held up by it (``tasks/pacing.py``); a job with parts only sends their tasks."""
    fast = run.params.imgsz is None or run.params.imgsz <= DEFAULT_INFERENCE_SIZE
    return fast and not run.has_parts and run.attempts == 1 and 0 < len(run.pending) <= batch_size


class Mailbox:
    """This process's own channel to the broker. The pipeline's stages share it: every use holds the lock."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.lock = threading.Lock()
        self._connection: Connection | None = None

    def take(self, count: int) -> list[Message]:
        """Up to ``count`` messages ready now on the inference queue, unacknowledged; none when the broker
        is unreachable (the round is then what it holds already)."""
        taken: list[Message] = []
        with self.lock:
            try:
                if self._connection is None:
                    self._connection = self.app.connection_for_read()
                queue = INFERENCE_QUEUE(self._connection.default_channel)
                while len(taken) < count and (message := queue.get(no_ack=False)) is not None:
                    taken.append(message)
            except Exception:
                log.warning("could not take round-mates from the broker", exc_info=True)
                self._close()
        return taken

    def settle(self, message: Message, requeue: bool = False) -> None:
        """Acknowledge a message (or give it back to the queue); a broker that is gone redelivers it."""
        with self.lock:
            try:
                message.reject(requeue=True) if requeue else message.ack()
            except Exception:
                log.warning("could not settle a round-mate's message; it will be redelivered", exc_info=True)

    def close(self) -> None:
        with self.lock:
            self._close()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = None


class Mates:
    """A round's :class:`~tasks.pipeline.Intake`: takes messages, begins their attempts, settles them."""

    def __init__(
        self,
        mailbox: Mailbox,
        transaction: Transaction,
        lease: timedelta,
        batch_size: int,
        events: Callable[[str, dict[str, dict[str, Any]]], None],
    ) -> None:
        self.mailbox = mailbox
        self.transaction = transaction
        self.lease = lease
        self.batch_size = batch_size
        self.events = events
        self.unsettled: dict[int, Message] = {}
        self.open = True
        self._lock = threading.Lock()

    def take(self, count: int) -> list[Member]:
        """Up to ``count`` members from the messages ready now; none once a job that must run alone was met."""
        if not self.open:
            return []
        messages = self.mailbox.take(count)
        if not messages:  # the queue is empty for now: no transaction, no revoked check, no events
            return []
        with self._lock:
            self.unsettled |= {id(message): message for message in messages}
        wanted: list[tuple[str, uuid.UUID, Message]] = []
        detect_jobs = [(message, *_detect_job(message)) for message in messages]
        revoked = revoked_among(self.mailbox.app, [task_id for _, task_id, job_id in detect_jobs if job_id])
        for message, task_id, job_id in detect_jobs:
            if job_id is None:
                self.open = False
                self.settle(message, requeue=True)
            elif task_id in revoked:
                self.transaction(lambda s, job_id=job_id, task_id=task_id: cancel_job(s, job_id, task_id=task_id))
                self.events("task-revoked", {task_id: {"terminated": False, "signum": None, "expired": False}})
                self.settle(message)
            else:
                wanted.append((task_id, job_id, message))
        runs = self.transaction(lambda s: begin_attempts(s, [job_id for _, job_id, _ in wanted], self.lease))
        members: list[Member] = []
        given_back: list[tuple[JobRun, Message]] = []
        for (task_id, job_id, message), run in zip(wanted, runs, strict=True):
            if run is None:  # finished, cancelled, or held by a live attempt
                log.info("round-mate not started task_id=%s", task_id, extra={"job_id": str(job_id)})
                self.settle(message)
            elif can_join_round(run, self.batch_size):
                members.append(Member(task_id, run, message))
            else:
                given_back.append((run, message))
        if given_back:
            self.open = False
            self.transaction(lambda s: [release_attempt(s, r.job_id, r.lease_token) for r, _ in given_back])
            for _, message in given_back:
                self.settle(message, requeue=True)
        self.events(
            "task-started", {m.task_id: {"name": DETECT_TASK, "args": repr([str(m.run.job_id)])} for m in members}
        )
        return members

    def settle(self, message: Message, requeue: bool = False) -> None:
        """Acknowledge (or requeue) ``message`` once, whichever stage gets to it first."""
        with self._lock:
            if self.unsettled.pop(id(message), None) is None:
                return
        self.mailbox.settle(message, requeue)

    def settle_rest(self, requeue: bool) -> None:
        """Every message not settled yet: given back (``requeue``), or acknowledged for the reaper to re-send."""
        with self._lock:
            rest = list(self.unsettled.values())
        for message in rest:
            self.settle(message, requeue)


def _detect_job(message: Message) -> tuple[str, uuid.UUID | None]:
    """The task id and job id of a detect task's message; no job id for any other message."""
    headers = message.headers or {}
    try:
        args = message.decode()[0]
        job_id = uuid.UUID(str(args[0])) if headers.get("task") == DETECT_TASK else None
    except Exception:
        job_id = None
    return str(headers.get("id")), job_id

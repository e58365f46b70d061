"""Revokes that no worker received: RabbitMQ keeps them, and the next worker (or the reaper) applies them.

Why: ``celery -A tasks control revoke|terminate`` and Flower's Revoke and Terminate buttons
broadcast on Celery's ``celery.pidbox`` fanout exchange, which reaches only the workers online.
With none online RabbitMQ drops the message ("No nodes replied"), nothing records it (a worker's
``--statedb`` holds only the revokes it received, and Celery writes REVOKED to the result
backend only in a worker that received one), and the job's task later runs as if never revoked.

So the durable queue :data:`MISSED_REVOKES` (:func:`missed_revokes_queue`) is bound to that exchange
and gets a copy of every broadcast. Every worker drains it when it starts, before its consumer takes a task
(:class:`ApplyMissedRevokes`), and the reaper drains it on every run (``tasks.maintenance``):
each revoke or terminate of a job's current task cancels the job, as the worker's
``task_revoked`` handler would have; a job that has ended, a revoke of an older message, and any
other task id change nothing. Every other broadcast (Flower enables events every 5 s, pings,
inspections) is dropped. A copy of a revoke that a worker did receive changes nothing more.

Both also declare the queue and its binding: the exchange is transient, so a broker restart
removes the binding (the queue and its persistent messages stay) until the next drain makes it
again. The queue keeps the latest :data:`HELD_BROADCASTS` broadcasts.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery, bootsteps
from kombu import Connection, Consumer, Message, Queue

from config.logs import job_context
from jobs.lifecycle import cancel_job
from tasks import metrics
from tasks.runtime import runtime_of

log = logging.getLogger(__name__)

# The oldest are dropped beyond this. Flower alone broadcasts once every 5 s: 50,000 is about 70 hours
# with no worker to drain them, and a full queue drains in about 4 s.
HELD_BROADCASTS = 50_000
MISSED_REVOKES = "yolo-jobs.missed-revokes"
REVOKE_METHODS = ("revoke", "terminate")
# The drain takes every message held (no prefetch limit: all stay unacknowledged until the cancellations
# commit, at most HELD_BROADCASTS small ones), and stops early when none arrives for this long.
DRAIN_IDLE_SECONDS = 1.0
# A task id is its job's id, or the job's id and a suffix (``jobs.dispatch.new_task_id``).
JOB_ID_LENGTH = 36


def missed_revokes_queue(app: Celery) -> Queue:
    """The durable queue bound to ``app``'s broadcast exchange (``celery.pidbox``)."""
    return Queue(MISSED_REVOKES, app.control.mailbox.exchange, durable=True, max_length=HELD_BROADCASTS)


def apply_missed_revokes(app: Celery) -> list[str]:
    """Drain :data:`MISSED_REVOKES` and cancel each job whose current task a broadcast revoked; return their ids.

    Best effort: the messages are acknowledged only after the cancellations commit, so when the
    broker or the database fails they stay in the queue for the next drain (and none is cancelled).
    """
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            task_ids, last = _drain(connection, missed_revokes_queue(app))
            cancelled = _cancel_jobs(app, task_ids) if task_ids else []
            if last is not None:
                last.ack(multiple=True)
    except Exception:
        log.warning("could not apply the revokes no worker received; the next drain will", exc_info=True)
        return []
    return cancelled


def _drain(connection: Connection, unbound: Queue) -> tuple[list[str], Message | None]:
    """The task ids revoked by the broadcasts held now, and the last message taken (its ack covers all)."""
    queue = unbound(connection.default_channel)
    queue.declare()
    held = queue.queue_declare(passive=True).message_count
    task_ids: list[str] = []
    taken = 0
    last: Message | None = None

    def take(message: Message) -> None:
        nonlocal taken, last
        taken, last = taken + 1, message
        task_ids.extend(_revoked_task_ids(message))

    with Consumer(connection.default_channel, [queue], on_message=take, accept=["json"]):
        while taken < held:
            try:
                connection.drain_events(timeout=DRAIN_IDLE_SECONDS)
            except TimeoutError:
                break
    return task_ids, last


def _revoked_task_ids(message: Message) -> list[str]:
    """The task ids a ``revoke`` or ``terminate`` broadcast names (one id, or a list); none for other broadcasts."""
    try:
        body: Any = message.decode()
        if body.get("method") not in REVOKE_METHODS:
            return []
        task_id = body["arguments"]["task_id"]
    except Exception:
        return []
    return [str(task_id) for task_id in (task_id if isinstance(task_id, list) else [task_id])]


def _cancel_jobs(app: Celery, task_ids: list[str]) -> list[str]:
    cancelled: list[str] = []
    with runtime_of(app).storage.database.transaction() as session:
        for task_id in task_ids:
            try:
                job_id = uuid.UUID(task_id[:JOB_ID_LENGTH])
            except ValueError:
                continue
            if cancel_job(session, job_id, task_id=task_id):
                cancelled.append(str(job_id))
    for job_id in cancelled:
        metrics.job_finished("cancelled")
        with job_context(job_id):
            log.warning("job cancelled: applied a revoke kept in the missed-revokes queue")
    return cancelled


class ApplyMissedRevokes(bootsteps.StartStopStep):
    """A worker bootstep: apply the missed revokes at start-up, before the consumer (the last step) takes tasks.

    When the broker or the database is unreachable the worker starts anyway, and the reaper
    applies them later (a job started meanwhile is then cancelled, and stops at its next write).
    """

    def start(self, parent: Any) -> None:
        apply_missed_revokes(parent.app)

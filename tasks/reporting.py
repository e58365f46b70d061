"""What the pipeline's writes are followed by in Celery: acknowledgements, task events, progress and metrics.

Runs in the pipeline's write stage, after the transaction that ended the jobs committed, so a mate's
message is acknowledged only once its end is in PostgreSQL (at-least-once). The task's own message is
Celery's to acknowledge, when the task returns.

Flower and ``celery events`` see each mate as a task of its own: the worker never received the mates'
messages, so their ``task-started`` (:mod:`tasks.intake`) and ``task-succeeded``/``-failed``/``-revoked``
events are sent here. Progress (the ``PROGRESS`` result state and a ``task-progress`` event) is the
task's own job's, published with each write but the last: a job done in one write publishes none,
and one that did publish stores its end state too, so the result backend never shows it running.

Flower reads task events, not the result backend: a ``task-<name>`` event sets the task's state to
``<NAME>`` and merges the event's fields into it (``celery.events.state.Task.event``), but its task
page, its task list and ``/api/task/info`` show only Celery's own fields. So the ``task-progress``
event carries the progress as ``result`` ("25/100 images"), which Flower shows while the task runs,
until ``task-succeeded`` brings the task's return value.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from celery import Task, states

from jobs.messages import DETECT_TASK, PART_TASK
from tasks import metrics
from tasks.intake import Mates
from tasks.pipeline import FAILED, SUCCEEDED, Member

log = logging.getLogger(__name__)
PROGRESS = "PROGRESS"
# What each task's progress counts: a detect task's, its job's images; a part's task (tasks/parts.py),
# the frames of its job's video, the one thing a part publishes.
UNITS = {DETECT_TASK: "images", PART_TASK: "frames"}


class TaskReporter:
    """The :class:`~tasks.pipeline.Reporter` of a detect task's pipeline.

    It runs in the write stage's thread, where Celery's ``task.request`` (thread-local) is empty:
    the task's request is taken here, in the task's thread.
    """

    def __init__(self, task: Task, leader: Member) -> None:
        self.task = task
        self.request = task.request
        self.leader = leader
        self.mates: Mates | None = None
        self.reported = False

    def ended(self, members: Sequence[Member]) -> None:
        events: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for member in members:
            if member.outcome in (SUCCEEDED, FAILED):
                metrics.job_finished(member.outcome)
            if member is self.leader:
                if member.outcome == SUCCEEDED and self.reported:
                    self.report_progress(member.run.total, states.SUCCESS)
                continue
            if member.outcome == SUCCEEDED:
                outcome = {"job_id": str(member.job_id), "status": SUCCEEDED, "total": member.run.total}
                events["task-succeeded"][member.task_id] = {"result": repr(outcome)}
            elif member.outcome == FAILED:
                code, message = member.failure or ("internal_error", "")
                log.warning(
                    "job failed in a round code=%s message=%s", code, message, extra={"job_id": str(member.job_id)}
                )
                events["task-failed"][member.task_id] = {"exception": f"{code}: {message}", "traceback": ""}
            else:
                log.info("round-mate stopped without writing", extra={"job_id": str(member.job_id)})
                events["task-revoked"][member.task_id] = {"terminated": False, "signum": None, "expired": False}
        for kind, fields in events.items():
            self.send_events(kind, fields)
        if self.mates is not None:
            for member in members:
                if member.message is not None:
                    self.mates.settle(member.message)

    def progressed(self, member: Member) -> None:
        if member is self.leader:
            self.report_progress(member.done)
            self.reported = True

    def report_progress(self, done: int, state: str = PROGRESS) -> None:
        """Publish the task's job's progress (:func:`publish_progress`)."""
        publish_progress(self.task, self.request, self.leader.job_id, done, self.leader.run.total, state)

    def send_events(self, kind: str, fields_by_task: dict[str, dict[str, Any]]) -> None:
        """Task events: the mates' (the worker never saw their messages) and the task's progress (best effort)."""
        if not fields_by_task:
            return
        try:
            with self.task.app.events.default_dispatcher(hostname=self.request.hostname) as dispatcher:
                for task_id, fields in fields_by_task.items():
                    dispatcher.send(kind, uuid=task_id, **fields)
        except Exception:
            log.warning("could not publish round-mates' %s events", kind, exc_info=True)


def publish_progress(task: Task, request: Any, job_id: Any, done: int, total: int, state: str = PROGRESS) -> None:
    """Publish a job's progress as the task's ``PROGRESS`` result state (``AsyncResult.info``, Flower's
    ``/api/task/result``) and as a ``task-progress`` event whose ``result`` is the progress in words (Flower's
    task page and task list); with ``state=SUCCESS``, only the end state, over the last PROGRESS.

    Best effort: the database holds the real progress, so a result backend or broker that is down must not fail
    the job. A part's task publishes its job's frames (a video).
    """
    meta = {"job_id": str(job_id), "done": done, "total": total}
    try:
        task.backend.store_result(request.id, meta, state, request=request)
        if state == PROGRESS:
            words = f"{done}/{total} {UNITS[task.name]}"
            with task.app.events.default_dispatcher(hostname=request.hostname) as dispatcher:
                dispatcher.send("task-progress", uuid=request.id, done=done, total=total, result=words)
    except Exception:
        log.warning("could not publish progress done=%d total=%d", done, total, exc_info=True)

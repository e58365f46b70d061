"""How an event consumer (Flower, ``celery events``) folds a job task's events, with the app's rules for PROGRESS.

Celery's own ``celery.events.state.State`` is fed the events a worker sends, as Flower's is: ``task-progress``
carries the progress in words as its result (tasks/reporting.py), which the task's end replaces, and a late
one (sent on another connection than the end's) changes neither the end state nor the result.
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

import pytest
from celery.events.state import State

from config import Settings
from jobs.messages import DETECT_TASK
from tasks.application import create_celery_app

clock = itertools.count(1)


@pytest.fixture(scope="module", autouse=True)
def app_rules() -> None:
    """The rules create_celery_app sets for every event consumer of this process."""
    create_celery_app(Settings.from_env({}))


def event(kind: str, task_id: str, **fields: Any) -> dict[str, Any]:
    now = time.time()
    return {
        "type": kind,
        "uuid": task_id,
        "hostname": "celery@test",
        "timestamp": now,
        "local_received": now,
        "clock": next(clock),
        **fields,
    }


def fed(*events: dict[str, Any]) -> State:
    state = State()
    for one in events:
        state.event(one)
    return state


def started(task_id: str) -> list[dict[str, Any]]:
    return [
        event("task-received", task_id, name=DETECT_TASK, args=f"['{task_id}']", kwargs="{}", retries=0),
        event("task-started", task_id),
    ]


def progress(task_id: str, done: int) -> dict[str, Any]:
    return event("task-progress", task_id, done=done, total=12, result=f"{done}/12 images")


def test_a_running_task_shows_its_progress_as_its_result() -> None:
    task_id = str(uuid.uuid4())
    task = fed(*started(task_id), progress(task_id, 3), progress(task_id, 7)).tasks[task_id]
    assert (task.state, task.result, task.name) == ("PROGRESS", "7/12 images", DETECT_TASK)
    assert task.as_dict()["result"] == "7/12 images"  # what /api/task/info and the task list serve


def test_the_end_replaces_the_progress_and_a_late_progress_changes_nothing() -> None:
    task_id = str(uuid.uuid4())
    outcome = repr({"job_id": task_id, "status": "succeeded", "total": 12})
    ended = event("task-succeeded", task_id, result=outcome, runtime=4.2)
    task = fed(*started(task_id), progress(task_id, 7), ended, progress(task_id, 9)).tasks[task_id]
    assert (task.state, task.result) == ("SUCCESS", outcome)


def test_a_late_progress_leaves_a_revoked_task_revoked() -> None:
    task_id = str(uuid.uuid4())
    revoked = event("task-revoked", task_id, terminated=True, signum=15, expired=False)
    task = fed(*started(task_id), progress(task_id, 7), revoked, progress(task_id, 9)).tasks[task_id]
    assert task.state == "REVOKED" and task.result == "7/12 images"

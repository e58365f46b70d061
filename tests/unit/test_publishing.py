"""One publishing policy: the API's sends and the workers' (the reaper's, a finished job's webhook) retry a dropped
broker connection alike, as ``celery_config.PUBLISH_RETRY_POLICY`` says.

Sent over kombu's in-memory transport: what is checked is the policy Celery hands to the publish
(``before_task_publish``), not a broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.signals import before_task_publish

import celery_config
from app.dispatcher import TaskDispatcher
from config import Settings
from jobs.messages import DELIVER_WEBHOOK_TASK, DETECT_TASK

SETTINGS = Settings.from_env({"CELERY_BROKER_URL": "memory://"})


@pytest.fixture()
def published() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Each published task's name and the retry policy it was published with, in order."""
    sent: list[tuple[str, dict[str, Any]]] = []

    def note(sender: str, retry_policy: dict[str, Any], **_: Any) -> None:
        sent.append((sender, retry_policy))

    before_task_publish.connect(note, weak=False)
    yield sent
    before_task_publish.disconnect(note)


def test_the_api_and_the_workers_publish_with_one_retry_policy(published: list[tuple[str, dict[str, Any]]]) -> None:
    dispatcher = TaskDispatcher(SETTINGS)
    dispatcher.send_detect(uuid.uuid4(), "api-detect")
    dispatcher.send_webhook_delivery(uuid.uuid4())
    # The workers' and beat's app, as tasks/__init__.py configures it: the reaper re-sends a job's task
    # (tasks/maintenance.py), a worker's session sends a finished job's webhook (tasks/runtime.py).
    worker = Celery("worker", set_as_current=False)
    worker.config_from_object(celery_config.from_settings(SETTINGS))
    worker.send_task(DETECT_TASK, args=[str(uuid.uuid4())], ignore_result=True)
    worker.send_task(DELIVER_WEBHOOK_TASK, args=[str(uuid.uuid4())], ignore_result=True)

    policy = celery_config.PUBLISH_RETRY_POLICY
    tasks = [DETECT_TASK, DELIVER_WEBHOOK_TASK] * 2
    assert published == [(task, policy) for task in tasks]

"""Sending tasks to the workers by name, without importing any worker code.

The API's Celery client has no result backend: job state lives in PostgreSQL,
and a Redis result consumer here would only hold subscriptions open.
"""

from __future__ import annotations

import uuid

from celery import Celery
from flask import Flask

DETECT_TASK = "tasks.inference.detect"


class TaskDispatcher:
    """Publishes ID-only task messages with RabbitMQ publisher confirms."""

    def __init__(self, broker_url: str) -> None:
        self.celery = Celery("yolo_jobs_api", set_as_current=False)
        self.celery.config_from_object("celery_config")
        self.celery.conf.update(broker_url=broker_url, result_backend=None, task_ignore_result=True)

    def send_detect(self, job_id: uuid.UUID) -> str:
        """Publish the job's task (retrying the connection briefly); return the task id."""
        result = self.celery.send_task(
            DETECT_TASK,
            args=[str(job_id)],
            task_id=str(job_id),
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
        )
        return result.id

    def broker_is_reachable(self) -> bool:
        try:
            with self.celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception:
            return False
        return True


def init_app(app: Flask) -> None:
    app.extensions["yolo_dispatcher"] = TaskDispatcher(app.config["CELERY_BROKER_URL"])

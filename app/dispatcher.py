"""Sending tasks to the workers by name (``jobs.messages``), without importing any worker code.

The API's Celery client is configured from the same settings as the workers'
(``celery_config.py``), but has no result backend: job state lives in PostgreSQL.
With Redis as its backend, ``send_task`` SUBSCRIBEs to the task's result channel
(and later UNSUBSCRIBEs) for every message it publishes, whatever
``task_ignore_result`` says; and a ``result_backend`` in the configuration does not
help, since Celery prefers ``CELERY_RESULT_BACKEND`` from the environment to it
(the workers' setting, in the same environment). An app's ``backend_cls`` comes
before both, so the API's app sets it.
"""

from __future__ import annotations

import logging
import uuid

from celery import Celery

import celery_config
from config import Settings
from jobs.messages import DELIVER_WEBHOOK_TASK, DETECT_TASK

log = logging.getLogger(__name__)


class PublishingCelery(Celery):
    """A Celery app that only publishes: its result backend is Celery's ``disabled`` one, whatever the
    environment says."""

    backend_cls = "disabled"


class TaskDispatcher:
    """Publishes ID-only task messages with RabbitMQ publisher confirms."""

    def __init__(self, settings: Settings) -> None:
        self.celery = PublishingCelery("yolo_jobs_api", set_as_current=False)
        self.celery.config_from_object(celery_config.from_settings(settings))

    def send_detect(self, job_id: uuid.UUID, task_id: str) -> None:
        """Publish the job's task as ``task_id``; raise when the broker refuses it.

        Every publish retries a dropped connection as ``celery_config.PUBLISH_RETRY_POLICY`` says.
        """
        self.celery.send_task(DETECT_TASK, args=[str(job_id)], task_id=task_id)

    def send_webhook_delivery(self, delivery_id: uuid.UUID) -> None:
        """Publish the delivery task of a webhook (after the commit that recorded it: ``webhooks.outbox``)."""
        self.celery.send_task(DELIVER_WEBHOOK_TASK, args=[str(delivery_id)])

    def revoke(self, task_id: str) -> None:
        """Tell every worker to discard ``task_id`` (Flower shows REVOKED); best effort: the job is cancelled anyway."""
        try:
            self.celery.control.revoke(task_id)
        except Exception:
            log.warning("could not broadcast the revoke of task %s", task_id, exc_info=True)

    def broker_is_reachable(self) -> bool:
        try:
            with self.celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception:
            return False
        return True

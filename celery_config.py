"""Celery configuration, built from the process's :class:`config.Settings`.

``tasks.application.create_celery_app`` loads it with ``config_from_object(from_settings(settings))``
and the API's task dispatcher starts from the same mapping. Queues are durable,
messages are JSON and carry only IDs, publishing waits for RabbitMQ's confirms and
retries as :data:`PUBLISH_RETRY_POLICY` says (every sender alike), a task is
acknowledged only after it finished, and every task's queue is declared here, once
(``task_routes``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab
from kombu import Exchange, Queue

from config import Settings
from config.redis import REDIS_TIMEOUT_SECONDS
from jobs.messages import CLEANUP_TASK, REAP_TASK, SWEEP_UPLOADS_TASK, SWEEP_WEBHOOKS_TASK

# How every task message of yolo-jobs is published (the API's, beat's and the workers' alike): a broker
# connection that drops is tried twice more within about a second, then the send raises. The API answers
# its request meanwhile (503 when it gives up); what beat or a worker fails to send, the reaper or the
# webhook sweep sends again.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}

EXCHANGE = Exchange("yolo-jobs", type="direct", durable=True)
QUEUES = (
    Queue("inference", EXCHANGE, routing_key="inference", durable=True),
    Queue("maintenance", EXCHANGE, routing_key="maintenance", durable=True),
    # Webhook deliveries wait on other people's servers (up to 10 s each): a queue of their own,
    # served by a worker that needs no GPU.
    Queue("webhooks", EXCHANGE, routing_key="webhooks", durable=True),
)
ROUTES = {
    "tasks.detection.*": {"queue": "inference", "routing_key": "inference"},
    "tasks.parts.*": {"queue": "inference", "routing_key": "inference"},
    "tasks.maintenance.*": {"queue": "maintenance", "routing_key": "maintenance"},
    "tasks.webhooks.*": {"queue": "webhooks", "routing_key": "webhooks"},
}


def from_settings(settings: Settings) -> dict[str, Any]:
    """Every Celery setting of yolo-jobs, for the workers, beat, Flower and the API's client alike."""
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        "broker_transport_options": {"confirm_publish": True},
        "task_publish_retry": True,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_expires": 24 * 3600,
        # The result backend holds progress and revokes only, both best effort (job state is in PostgreSQL):
        # one attempt per write, where Celery's default retries 20 times, a second apart.
        "redis_socket_timeout": REDIS_TIMEOUT_SECONDS,
        "redis_socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        "result_backend_transport_options": {"retry_policy": {"max_retries": 0}},
        "result_extended": True,
        "task_queues": QUEUES,
        "task_default_queue": "inference",
        "task_default_exchange": EXCHANGE.name,
        "task_default_routing_key": "inference",
        "task_create_missing_queues": False,
        "task_routes": ROUTES,
        "task_default_delivery_mode": "persistent",
        # At-least-once delivery: ack after the task ran, requeue when its process dies,
        # and take one message at a time so a dying worker holds back no others.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # When the broker connection drops, a running task's late ack can never be sent and its
        # message comes back: cancel the task rather than let it finish as a duplicate (Celery 6's
        # default; left unset or False, Celery warns on every connection loss). The job's lease
        # outlives the cancelled attempt, so the redelivery is skipped and the reaper re-sends the job
        # once the lease expires; it resumes after the batches already recorded, as after a killed worker.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # WORKER_PROCESSES, else Celery's "auto": one process per core the worker may use
        # (its affinity, capped by a cgroup CPU quota), where the default would count every core of the host.
        "worker_concurrency": settings.worker.processes or "auto",
        # Below RabbitMQ's default consumer_timeout (30 min), so the broker never drops us first.
        "task_soft_time_limit": 1200,
        "task_time_limit": 1500,
        # No STARTED result writes: Flower shows starts from events, and a STARTED write would
        # overwrite the REVOKED that a revoke stores for a message no live worker knew of.
        "task_track_started": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": beat_schedule(settings),
        "timezone": "UTC",
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Retention daily at RETENTION_CLEANUP_TIME (UTC), or every RETENTION_CLEANUP_INTERVAL_SECONDS when set;
    the reaper every REAPER_INTERVAL_SECONDS, the webhook sweep every WEBHOOK_SWEEP_INTERVAL_SECONDS, the
    expired uploads' sweep every UPLOAD_SWEEP_INTERVAL_SECONDS.
    A message no worker took before the next one is due expires. No result is kept: beat sending a task
    with a result would SUBSCRIBE to its result channel first: a Redis that was down stalled beat for
    20 reconnects a second apart, then CRITICAL "must be restarted", and the task was not sent."""
    interval = settings.retention.cleanup_interval_seconds
    hour, minute = settings.retention.cleanup_time
    return {
        "cleanup-expired-files": {
            "task": CLEANUP_TASK,
            "schedule": timedelta(seconds=interval) if interval else crontab(hour=hour, minute=minute),
            "options": {"expires": interval or 23 * 3600, "ignore_result": True},
        },
        "reap-jobs": {
            "task": REAP_TASK,
            "schedule": timedelta(seconds=settings.jobs.reaper_interval_seconds),
            "options": {"expires": settings.jobs.reaper_interval_seconds, "ignore_result": True},
        },
        "sweep-webhooks": {
            "task": SWEEP_WEBHOOKS_TASK,
            "schedule": timedelta(seconds=settings.webhooks.sweep_interval_seconds),
            "options": {"expires": settings.webhooks.sweep_interval_seconds, "ignore_result": True},
        },
        "sweep-uploads": {
            "task": SWEEP_UPLOADS_TASK,
            "schedule": timedelta(seconds=settings.files.upload_sweep_interval_seconds),
            "options": {"expires": settings.files.upload_sweep_interval_seconds, "ignore_result": True},
        },
    }

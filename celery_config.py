"""Celery configuration, loaded with ``app.config_from_object("celery_config")``.

Values come from the environment through :class:`storage.settings.Settings`.
Queues are durable, messages are JSON and carry only IDs, publishing waits for
RabbitMQ's confirms, and a task is acknowledged only after it finished.
"""

from datetime import timedelta

from celery.schedules import crontab
from kombu import Exchange, Queue

from storage.settings import Settings

_settings = Settings.from_env()
_cleanup_hour, _cleanup_minute = _settings.retention_cleanup_time

broker_url = _settings.broker_url
result_backend = _settings.result_backend
broker_connection_retry_on_startup = True
broker_connection_timeout = 5
broker_transport_options = {"confirm_publish": True}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
result_expires = 24 * 3600
result_extended = True

_exchange = Exchange("yolo-jobs", type="direct", durable=True)
task_queues = (
    Queue("inference", _exchange, routing_key="inference", durable=True),
    Queue("maintenance", _exchange, routing_key="maintenance", durable=True),
)
task_default_queue = "inference"
task_default_exchange = "yolo-jobs"
task_default_routing_key = "inference"
task_create_missing_queues = False
task_routes = {
    "tasks.inference.*": {"queue": "inference", "routing_key": "inference"},
    "tasks.maintenance.*": {"queue": "maintenance", "routing_key": "maintenance"},
}
task_default_delivery_mode = "persistent"

# At-least-once delivery: ack after the task ran, requeue when its process dies,
# and take one message at a time so a dying worker holds back no others.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Below RabbitMQ's default consumer_timeout (30 min), so the broker never drops us first.
task_soft_time_limit = 1200
task_time_limit = 1500

task_track_started = True
worker_send_task_events = True
task_send_sent_event = True
worker_hijack_root_logger = False

# Retention cleanup: daily at RETENTION_CLEANUP_TIME (UTC), or every RETENTION_CLEANUP_INTERVAL_SECONDS
# when that is set. A message no worker took before the next one is due expires; an overlapping run skips.
_cleanup_interval = _settings.retention_cleanup_interval_seconds
_cleanup_schedule = (
    timedelta(seconds=_cleanup_interval) if _cleanup_interval else crontab(hour=_cleanup_hour, minute=_cleanup_minute)
)
beat_schedule = {
    "cleanup-expired-files": {
        "task": "tasks.maintenance.cleanup_expired_files",
        "schedule": _cleanup_schedule,
        "options": {"queue": "maintenance", "expires": _cleanup_interval or 23 * 3600},
    },
    "requeue-stranded-jobs": {
        "task": "tasks.maintenance.requeue_stranded_jobs",
        "schedule": timedelta(minutes=5),
        "options": {"queue": "maintenance", "expires": 300},
    },
}
timezone = "UTC"

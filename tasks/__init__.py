"""The Celery application of yolo-jobs: ``celery -A tasks worker|beat|inspect|flower``.

The settings are read once, here, for every process that loads this package
(``tasks.settings``); the Celery configuration is built from them by
``celery_config.py``. Task modules are listed explicitly; they import torch and
ultralytics only inside worker child processes.
"""

from celery import Celery, states

import celery_config
from config import Settings
from config.ultralytics import configure_ultralytics

settings = Settings.from_env()
configure_ultralytics(settings.worker)

# Flower (and every event consumer) keeps the state of highest precedence, and a custom
# state outranks REVOKED: a late task-progress event would hide a revoke for ever.
# PROGRESS ranks as STARTED, so REVOKED, SUCCESS and FAILURE replace it.
states.PRECEDENCE_LOOKUP["PROGRESS"] = states.PRECEDENCE_LOOKUP[states.STARTED]

app = Celery("yolo_jobs", include=["tasks.inference", "tasks.maintenance", "tasks.webhooks"])
app.config_from_object(celery_config.from_settings(settings))
# Every worker applies the revokes broadcast while no worker was online before it takes a task.
app.steps["worker"].add("tasks.missed_revokes:ApplyMissedRevokes")

from tasks import logs  # noqa: E402,F401  (connects Celery's setup_logging signal)

__all__ = ["app", "settings"]

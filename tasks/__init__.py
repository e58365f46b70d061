"""The Celery application of yolo-jobs: ``celery -A tasks worker|beat|inspect|flower``.

Configured from ``celery_config.py``. Task modules are listed explicitly; they
import torch and ultralytics only inside worker child processes.
"""

from celery import Celery

from storage.settings import configure_ultralytics_env

configure_ultralytics_env()

app = Celery("yolo_jobs", include=["tasks.inference", "tasks.maintenance"])
app.config_from_object("celery_config")

__all__ = ["app"]

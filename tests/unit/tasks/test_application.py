"""The Celery app is built by ``create_celery_app(settings)``; importing a module of ``tasks`` does nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from config import Settings
from config.paths import PROJECT_ROOT
from jobs.messages import CLEANUP_TASK, DELIVER_WEBHOOK_TASK, DETECT_TASK, REAP_TASK, SWEEP_WEBHOOKS_TASK
from tasks.application import TASK_MODULES, create_celery_app

PROBE = """
import importlib, json, os, sys
from celery import states
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({"environment": "YOLO_CONFIG_DIR" in os.environ, "progress": "PROGRESS" in states.PRECEDENCE_LOOKUP}))
"""


def test_importing_the_task_modules_reads_no_settings_and_changes_nothing() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("YOLO_")}
    env["WORKER_ROUND_JOBS"] = "0"  # a bad setting: reading the settings would raise
    modules = [*TASK_MODULES, "tasks.application", "tasks.pipeline", "tasks.intake", "tasks.runtime"]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *modules], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"environment": False, "progress": False}


def test_the_app_is_built_from_the_settings_it_is_given() -> None:
    settings = Settings.from_env({"CELERY_BROKER_URL": "amqp://guest:guest@broker.example:5672/jobs"})
    celery_app = create_celery_app(settings)
    assert celery_app.settings is settings
    assert celery_app.conf.broker_url == "amqp://guest:guest@broker.example:5672/jobs"
    celery_app.loader.import_default_modules()
    names = {DETECT_TASK, CLEANUP_TASK, REAP_TASK, DELIVER_WEBHOOK_TASK, SWEEP_WEBHOOKS_TASK}
    assert names <= set(celery_app.tasks)
    assert celery_app.tasks[DETECT_TASK].app is celery_app

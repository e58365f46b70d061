"""The Celery application of yolo-jobs, built by one function from a :class:`config.Settings`.

Flask's ``celery_init_app`` pattern: nothing happens when a module of ``tasks`` is imported.
:func:`create_celery_app` configures the process (Ultralytics' environment, how event consumers such
as Flower rank the PROGRESS state and merge its events), builds the app from the settings
(``celery_config.from_settings``), adds the worker's bootstep and connects each module's signals
(``init_app``). The tasks are ``shared_task``\\ s, so they register on the app they run under; each
reaches this process's runtime as ``self.app.runtime``.
``celery -A tasks`` finds the app :mod:`tasks.celery` builds from the environment.
"""

from __future__ import annotations

from celery import Celery, states
from celery.events.state import Task as EventTask

import celery_config
from config import Settings
from config.ultralytics import configure_ultralytics
from tasks import detection, logs, metrics, runtime
from tasks.missed_revokes import ApplyMissedRevokes
from tasks.reporting import PROGRESS
from tasks.runtime import WorkerRuntime, build_runtime

TASK_MODULES = ("tasks.detection", "tasks.parts", "tasks.maintenance", "tasks.webhooks")


class WorkerApp(Celery):
    """A Celery app that holds the settings it was built from and this process's :class:`WorkerRuntime`."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("yolo_jobs", include=list(TASK_MODULES))
        self.settings = settings
        # Whether this worker consumes the inference queue (a maintenance-only worker loads no model),
        # and how many processes its pool runs (each child takes its share of the cores).
        self.serves_inference = True
        self.pool_processes = 1
        self._runtime: WorkerRuntime | None = None

    @property
    def runtime(self) -> WorkerRuntime:
        """This process's runtime, created on first use; it loads no model by itself."""
        if self._runtime is None:
            self._runtime = build_runtime(self.settings, self.send_task, self.pool_processes)
        return self._runtime

    def discard_runtime(self) -> None:
        """Forget a runtime inherited over fork, leaving its connections to the parent."""
        if self._runtime is not None:
            self._runtime.close(close_connections=False)
            self._runtime = None

    def close_runtime(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


def create_celery_app(settings: Settings) -> WorkerApp:
    """The Celery app for ``settings``, with this process configured for it."""
    configure_ultralytics(settings.worker)
    # Flower (and every event consumer) keeps the state of highest precedence, and a custom
    # state outranks REVOKED: a late task-progress event would hide a revoke for ever.
    # PROGRESS ranks as STARTED, so REVOKED, SUCCESS and FAILURE replace it; and a task-progress
    # event that arrives after the task's end merges none of its fields (its result, the
    # progress in words, would replace the task's return value).
    states.PRECEDENCE_LOOKUP[PROGRESS] = states.PRECEDENCE_LOOKUP[states.STARTED]
    EventTask.merge_rules[PROGRESS] = ()
    app = WorkerApp(settings)
    app.config_from_object(celery_config.from_settings(settings))
    # Every worker applies the revokes broadcast while no worker was online before it takes a task.
    app.steps["worker"].add(ApplyMissedRevokes)
    for module in (runtime, logs, metrics, detection):
        module.init_app(app)
    return app

"""Per-process worker resources: settings, storage and the model pool.

Every runtime's sessions send the webhook deliveries their transactions recorded once
those commit (``webhooks.outbox.publish_after_commit``), whichever task ended the job.

Created in each prefork child by ``worker_process_init``, which also loads the
models there (after fork, never in the parent). The pool's parent only builds a
runtime without models when it must mark a job failed after a hard time limit;
a child forked after that discards the inherited one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_process_shutdown

from config import Settings
from jobs.catalog import record_loaded_model
from jobs.messages import DELIVER_WEBHOOK_TASK
from storage import Storage
from tasks.model_pool import ModelPool
from webhooks.outbox import publish_after_commit

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    settings: Settings
    storage: Storage
    models: ModelPool


_runtime: WorkerRuntime | None = None
# Whether this worker consumes the inference queue (a maintenance-only worker loads no model).
_serves_inference = True


def get_runtime() -> WorkerRuntime:
    """This process's runtime, created on first use; it loads no model by itself."""
    global _runtime
    if _runtime is None:
        from tasks import app, settings

        storage = Storage(settings.database_url, settings.storage_root)
        publish_after_commit(
            storage.database.sessions, lambda delivery_id: app.send_task(DELIVER_WEBHOOK_TASK, args=[str(delivery_id)])
        )
        _runtime = WorkerRuntime(settings, storage, ModelPool(settings.models, settings.worker.device))
    return _runtime


def _publish_loaded_models(runtime: WorkerRuntime) -> None:
    """Tell the API which classes each loaded model detects (best effort: the database may be down)."""
    try:
        with runtime.storage.database.transaction() as session:
            for model in runtime.models.loaded:
                record_loaded_model(session, model)
    except Exception:
        log.warning("could not record the loaded models", exc_info=True)


@worker_init.connect
def _note_queues(sender: Any, **_: object) -> None:
    """In the parent, before the pool forks: remember whether children will run inference."""
    global _serves_inference
    _serves_inference = "inference" in sender.app.amqp.queues.consume_from


@worker_process_init.connect
def _init_child(**_: object) -> None:
    """In each new pool process: a runtime of its own, with every model loaded once."""
    global _runtime
    if _runtime is not None:  # inherited from the parent: leave its connections to it
        _runtime.storage.dispose(close=False)
        _runtime = None
    runtime = get_runtime()
    if _serves_inference:
        runtime.models.load_all()
        _publish_loaded_models(runtime)


@worker_process_shutdown.connect
def _shutdown_child(**_: object) -> None:
    if _runtime is not None:
        _runtime.storage.dispose()

"""Per-process worker resources: settings, storage and the model pool.

Every runtime's sessions send the webhook deliveries their transactions recorded once
those commit (``webhooks.outbox.publish_after_commit``), whichever task ended the job.

Created in each prefork child by ``worker_process_init``, which also loads the
models there (after fork, never in the parent), each running inference on
``WORKER_INFERENCE_THREADS`` threads: by default the cores the worker may use
divided among the pool's processes, so the pool fills the cores and never
oversubscribes them. The pool's parent only builds a
runtime without models when it must mark a job failed after a hard time limit;
a child forked after that discards the inherited one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery.signals import celeryd_after_setup, worker_process_init, worker_process_shutdown
from celery.utils.sysinfo import cpu_budget

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
# How many processes the pool runs (Celery's concurrency), so each child takes its share of the cores.
_pool_processes = 1


def threads_per_process(processes: int) -> int:
    """Inference threads for each of ``processes`` processes sharing the cores the worker may use, at least 1.

    The cores are Celery's CPU budget: the affinity mask capped by a cgroup CPU quota.
    Ultralytics' own choice (``OMP_NUM_THREADS=1`` on import) leaves the other cores idle.
    """
    return max(1, cpu_budget().count // max(1, processes))


def get_runtime() -> WorkerRuntime:
    """This process's runtime, created on first use; it loads no model by itself."""
    global _runtime
    if _runtime is None:
        from tasks import app, settings

        # No pre-ping: a connection the server closed is refused by its socket at checkout, and a
        # statement that fails on a lost one is an outage the task retries (storage/db.py, tasks/outages.py).
        storage = Storage(settings.database_url, settings.storage_root, pre_ping=False)
        publish_after_commit(
            storage.database.sessions, lambda delivery_id: app.send_task(DELIVER_WEBHOOK_TASK, args=[str(delivery_id)])
        )
        threads = settings.worker.inference_threads or threads_per_process(_pool_processes)
        _runtime = WorkerRuntime(settings, storage, ModelPool(settings.models, settings.worker.device, threads))
    return _runtime


def _publish_loaded_models(runtime: WorkerRuntime) -> None:
    """Tell the API which classes each loaded model detects (best effort: the database may be down)."""
    try:
        with runtime.storage.database.transaction() as session:
            for model in runtime.models.loaded:
                record_loaded_model(session, model)
    except Exception:
        log.warning("could not record the loaded models", exc_info=True)


@celeryd_after_setup.connect
def _note_pool(instance: Any, **_: object) -> None:
    """In the parent, before the pool forks: remember whether children run inference, and how many there are."""
    global _serves_inference, _pool_processes
    _serves_inference = "inference" in instance.app.amqp.queues.consume_from
    _pool_processes = instance.concurrency


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

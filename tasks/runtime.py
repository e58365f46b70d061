"""Per-process worker resources: settings, storage, the model pool and the broker channel rounds take from.

The runtime is held by the Celery application (:class:`tasks.application.WorkerApp`), which
every task reaches as ``self.app`` (:func:`runtime_of`): nothing is fetched from a module global.
Every runtime's sessions send the webhook deliveries their transactions recorded once those
commit (``webhooks.outbox.publish_after_commit``), whichever task ended the job.

Created in each prefork child by ``worker_process_init``, which also seeds the model registry from
``YOLO_MODELS`` (``jobs.catalog.seed_registry``) and loads those models there (after fork, never in the
parent); any other registered model loads on its first job (``tasks.model_pool``). Each runs inference on
``WORKER_INFERENCE_THREADS`` threads: by default the cores the worker may use divided among the pool's
processes, so the pool fills the cores and never oversubscribes them. The pool's parent only builds a runtime
without models when it must mark a job failed after a hard time limit, or cancel a revoked job; a child forked
after that discards the inherited one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from celery import Celery
from celery.signals import celeryd_after_setup, worker_process_init, worker_process_shutdown
from celery.utils.sysinfo import cpu_budget

from config import Settings
from jobs.catalog import LoadedModel, record_loaded_model, registered_model, run_size, seed_registry
from jobs.lifecycle import JobParams, record_run_size
from jobs.messages import DELIVER_WEBHOOK_TASK
from storage import Storage
from tasks.model_pool import ModelPool
from tasks.outages import DatabaseOutage, ride_out_outages
from webhooks.outbox import publish_after_commit

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tasks.intake import Mailbox

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class WorkerRuntime:
    settings: Settings
    storage: Storage
    models: ModelPool
    mailbox: Mailbox | None = None

    def transaction(self, work: Callable[[Session], T]) -> T:
        """``work`` in a transaction of its own, riding out outages (:mod:`tasks.outages`)."""

        def attempt() -> T:
            with self.storage.database.transaction() as session:
                return work(session)

        return ride_out_outages(attempt, self.settings.jobs.database_retry_seconds)

    def at_run_size(self, job_id: uuid.UUID, params: JobParams) -> JobParams:
        """``params`` at the one size their model runs at (an export made at a fixed size), which the job then
        records; as asked when the model runs at any size, or cannot be loaded (its job fails so). The model
        loads here, once per process, if it was not loaded."""
        size = run_size(self.models.fixed_size(params.model))
        if size is None or size == params.imgsz:
            return params
        self.transaction(lambda s: record_run_size(s, job_id, size))
        log.info("job runs at its model's fixed size imgsz=%d asked=%s", size, params.imgsz)
        return replace(params, imgsz=size)

    def close(self, close_connections: bool = True) -> None:
        if self.mailbox is not None:
            self.mailbox.close()
        self.storage.dispose(close=close_connections)


class RegistryOnDatabase:
    """The model registry as a worker's pool reads it (riding out outages), and where it records each load."""

    def __init__(self, storage: Storage, retry_seconds: float) -> None:
        self.storage = storage
        self.retry_seconds = retry_seconds

    def weights_of(self, name: str) -> str | None:
        def read() -> str | None:
            with self.storage.database.transaction() as session:
                row = registered_model(session, name)
                return row.weights if row is not None else None

        return ride_out_outages(read, self.retry_seconds)

    def loaded(self, model: LoadedModel) -> None:
        """Best effort: a worker whose database is down still runs the model."""
        try:
            with self.storage.database.transaction() as session:
                record_loaded_model(session, model)
        except Exception:
            log.warning("could not record the loaded model name=%s", model.name, exc_info=True)


def threads_per_process(processes: int) -> int:
    """Inference threads for each of ``processes`` processes sharing the cores the worker may use, at least 1.

    The cores are Celery's CPU budget: the affinity mask capped by a cgroup CPU quota.
    Ultralytics' own choice (``OMP_NUM_THREADS=1`` on import) leaves the other cores idle.
    """
    return max(1, cpu_budget().count // max(1, processes))


def build_runtime(settings: Settings, send_task: Callable[..., Any], pool_processes: int) -> WorkerRuntime:
    """A runtime for this process; it loads no model by itself."""
    # No pre-ping: a connection the server closed is refused by its socket at checkout, and a
    # statement that fails on a lost one is an outage the task retries (storage/db.py, tasks/outages.py).
    storage = Storage(settings.database_url, settings.storage_root, pre_ping=False)
    publish_after_commit(
        storage.database.sessions, lambda delivery_id: send_task(DELIVER_WEBHOOK_TASK, args=[str(delivery_id)])
    )
    threads = settings.worker.inference_threads or threads_per_process(pool_processes)
    registry = RegistryOnDatabase(storage, settings.jobs.database_retry_seconds)
    models = ModelPool(registry, settings.worker.device, threads, settings.worker.max_models)
    return WorkerRuntime(settings, storage, models)


def runtime_of(app: Celery) -> WorkerRuntime:
    """The runtime of this process, held by its yolo-jobs Celery application."""
    return app.runtime  # type: ignore[attr-defined,no-any-return]


def _seed_registry(runtime: WorkerRuntime) -> None:
    """Register ``YOLO_MODELS``' models (best effort: the database may be down; the API seeds it too)."""
    try:
        with runtime.storage.database.transaction() as session:
            seed_registry(session, runtime.settings)
    except Exception:
        log.warning("could not seed the model registry from YOLO_MODELS", exc_info=True)


def init_app(app: Any) -> None:
    """Connect the pool's signals for ``app`` (a :class:`tasks.application.WorkerApp`)."""

    def note_pool(instance: Any, **_: object) -> None:
        """In the parent, before the pool forks: whether children run inference, and how many there are."""
        app.serves_inference = "inference" in instance.app.amqp.queues.consume_from
        app.pool_processes = instance.concurrency

    def init_child(**_: object) -> None:
        """In each new pool process: a runtime of its own, with YOLO_MODELS' models loaded (the others load on
        their first job)."""
        app.discard_runtime()  # inherited from the parent: its connections stay the parent's
        runtime = app.runtime
        if app.serves_inference:
            _seed_registry(runtime)
            settings = runtime.settings
            try:
                runtime.models.preload(dict.fromkeys([settings.default_model, *settings.models]))
            except DatabaseOutage:
                log.warning("could not preload YOLO_MODELS' models: each loads on its first job", exc_info=True)

    def shutdown_child(**_: object) -> None:
        app.close_runtime()

    celeryd_after_setup.connect(note_pool, weak=False)
    worker_process_init.connect(init_child, weak=False)
    worker_process_shutdown.connect(shutdown_child, weak=False)

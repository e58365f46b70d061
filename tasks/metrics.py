"""Worker metrics for Prometheus at ``http://WORKER_METRICS_ADDR:WORKER_METRICS_PORT/metrics``.

The worker's main process serves them; prefork children record into
prometheus_client's multiprocess files. The multiprocess mode is switched
on at ``worker_init`` (in the parent, before the pool forks), so Flower and the
other ``celery -A tasks`` commands that import this package are unaffected. When the
port is taken the worker still runs jobs, and says so as an error at start-up and again
once it is ready, so the missing endpoint is not lost in the banner.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from celery.signals import worker_init, worker_ready, worker_shutdown

from config.settings import WorkerSettings

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# This worker's metrics folder, set in the parent at worker_init.
_directory: Path | None = None
# Why the metrics endpoint could not be served, when it could not.
_not_served: str | None = None


@cache
def _metrics() -> dict[str, Any]:
    from prometheus_client import Counter, Histogram

    return {
        "jobs": Counter("yolo_worker_jobs_finished_total", "Jobs a worker finished, by final status", ["status"]),
        "inference": Histogram(
            "yolo_worker_inference_seconds",
            "Seconds spent predicting one batch of images",
            ["model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        ),
        "images": Counter("yolo_worker_images_total", "Images predicted, by model", ["model"]),
        "reuse": Counter(
            "yolo_worker_result_reuse_total",
            "Images whose reuse key was looked up (RESULT_REUSE): hit (an earlier result taken) or miss (inferred)",
            ["outcome"],
        ),
        "model_load": Histogram(
            "yolo_worker_model_load_seconds",
            "Seconds to load a model in a worker process",
            ["model"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60),
        ),
    }


def job_finished(status: str) -> None:
    _metrics()["jobs"].labels(status=status).inc()


def batch_predicted(model: str, images: int, seconds: float) -> None:
    _metrics()["inference"].labels(model=model).observe(seconds)
    _metrics()["images"].labels(model=model).inc(images)


def results_looked_up(hits: int, misses: int) -> None:
    _metrics()["reuse"].labels(outcome="hit").inc(hits)
    _metrics()["reuse"].labels(outcome="miss").inc(misses)


def model_loaded(model: str, seconds: float) -> None:
    _metrics()["model_load"].labels(model=model).observe(seconds)


def _serve_metrics(settings: WorkerSettings) -> None:
    global _directory
    port, addr = settings.metrics_port, settings.metrics_addr
    if not port:
        return
    _directory = Path(tempfile.gettempdir()) / f"yolo-jobs-worker-metrics-{os.getpid()}"
    shutil.rmtree(_directory, ignore_errors=True)
    _directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(_directory)  # prometheus_client reads it, in this process and the children
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server, values

    # Celery's CLI plugins (Flower's) may have imported prometheus_client before the
    # directory was known; metrics made from now on, in the children, write to files.
    values.ValueClass = values.MultiProcessValue()

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    try:
        start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        global _not_served
        _not_served = not_served_message(addr, port, exc)
        log.error(_not_served)
        return
    log.info("worker metrics on http://%s:%d/metrics", addr, port)


def not_served_message(addr: str, port: int, exc: OSError) -> str:
    """What an operator needs to know when the metrics port cannot be bound, and what to do about it."""
    reason = "is already in use (another worker on this host?)" if exc.errno == errno.EADDRINUSE else f"failed: {exc}"
    return (
        f"worker metrics are NOT served: listening on {addr}:{port} {reason}. This worker runs jobs, but "
        "Prometheus cannot scrape it; set WORKER_METRICS_PORT to a free port, or 0 to turn the metrics off."
    )


def _repeat_when_not_served(**_: object) -> None:
    """Say it again once the worker is ready: the start-up banner has scrolled the first message away."""
    if _not_served is not None:
        log.error(_not_served)


def _remove_metric_files(**_: object) -> None:
    if _directory is not None:
        shutil.rmtree(_directory, ignore_errors=True)


def init_app(app: Any) -> None:
    """Serve ``app``'s worker metrics from the worker's parent process, and clean up after it."""
    worker_init.connect(lambda **_: _serve_metrics(app.settings.worker), weak=False)
    worker_ready.connect(_repeat_when_not_served)
    worker_shutdown.connect(_remove_metric_files)

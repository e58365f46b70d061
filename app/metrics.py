"""API metrics for Prometheus at ``/metrics``: requests, upload bytes, jobs created by status, and failed
authentications; and the backlog (``app.backlog_metrics``), read when scraped.

Under gunicorn every worker process records into prometheus_client's
multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set by gunicorn_config.py and read
into ``Settings.api.metrics_dir``), and ``/metrics`` adds them up, whichever worker
answers the scrape. The backlog is no process's to record: a registry of its own
reads it from the broker and the database for each scrape, after the recorded metrics.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

import celery_config
from app.backlog_metrics import BacklogCollector
from app.extensions import get_settings, get_storage
from storage.queue_depths import ManagementApi

REQUESTS = Counter("yolo_api_requests_total", "HTTP requests answered", ["method", "endpoint", "status"])
REQUEST_SECONDS = Histogram("yolo_api_request_seconds", "Seconds to answer a request", ["endpoint"])
UPLOAD_BYTES = Counter("yolo_api_upload_bytes_total", "Bytes of images accepted in new jobs")
JOBS_CREATED = Counter("yolo_api_jobs_created_total", "Job submissions, by outcome", ["status"])
JOB_ACTIONS = Counter("yolo_api_job_actions_total", "Jobs cancelled, queued again or run again on request", ["action"])
AUTH_FAILURES = Counter(
    "yolo_api_auth_failures_total",
    "Requests refused for their credentials: refused (401), or throttled (429: too many failures from the address)",
    ["outcome"],
)

bp = Blueprint("metrics", __name__)
log = logging.getLogger("app.requests")


@bp.get("/metrics")
def metrics() -> Response:
    settings = get_settings()
    if settings.api.metrics_dir is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    backlog = CollectorRegistry()
    management = ManagementApi.of_broker(settings.broker_url, settings.broker_management_url)
    queues = [queue.name for queue in celery_config.QUEUES]
    backlog.register(BacklogCollector(management, get_storage().database, queues))
    return Response(generate_latest(registry) + generate_latest(backlog), mimetype=CONTENT_TYPE_LATEST)


def count_submission(status: int, upload_bytes: int = 0) -> None:
    """Count a job submission by the status it was answered with, and the new bytes it stored."""
    if status == 202:
        outcome = "queued"
    elif status in (503, 507):
        outcome = "unavailable"
    else:
        outcome = "rejected" if status < 500 else "error"
    JOBS_CREATED.labels(outcome).inc()
    UPLOAD_BYTES.inc(upload_bytes)


def _start_timer() -> None:
    g.request_started = time.perf_counter()


def _count(response: Response) -> Response:
    """Count and log each request (one structured line)."""
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    seconds = time.perf_counter() - g.request_started if "request_started" in g else 0.0
    REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
    REQUEST_SECONDS.labels(endpoint).observe(seconds)
    job_id = (request.view_args or {}).get("job_id") or g.get("job_id")
    log.info(
        "%s %s %d %.3fs",
        request.method,
        request.path,
        response.status_code,
        seconds,
        extra={"method": request.method, "path": request.path, "status": response.status_code, "job_id": job_id},
    )
    return response


def init_app(app: Flask) -> None:
    app.before_request(_start_timer)
    app.after_request(_count)
    app.register_blueprint(bp)

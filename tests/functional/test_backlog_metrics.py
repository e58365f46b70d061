"""The backlog on the API's /metrics: messages per queue (ready, unacknowledged) from RabbitMQ's management API,
queued jobs per model from PostgreSQL, read at scrape time (app/backlog_metrics.py).

No worker runs here: the gauges must answer when every worker is scaled to zero, which is when an autoscaler
needs them. A real AMQP client holds one message unacknowledged, as a worker running its task does. The
management API refreshes its numbers every 5 seconds (RabbitMQ's ``collect_statistics_interval``), so a test
polls until they arrive. A management API that refuses, never answers or refuses the credentials costs a
scrape its bounded timeout at most, and leaves out the queues' series rather than answering zero.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from flask import Flask
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

import celery_config
from app.backlog_metrics import BacklogCollector
from harness.images import image_bytes
from harness.processes import free_port, wait_until
from storage.db import Database
from storage.queue_depths import TIMEOUT, ManagementApi
from tests.conftest import MakeApp
from tests.helpers import TestKey, submit

INFERENCE, WEBHOOKS = "inference", "webhooks"
QUEUED_JOBS = 3
# RabbitMQ's management stats arrive every 5 s.
STATS_DELAY = 15


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by (name, sorted labels): the page parses as Prometheus' text format."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return scrape.get((name, tuple(sorted(labels.items()))))


def scrape(app: Flask) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = app.test_client().get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    return samples(response.get_data(as_text=True))


def queue_series(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> list[str]:
    return [name for name, _labels in scraped if name in ("yolo_queue_messages", "yolo_queue_consumers")]


@pytest.fixture()
def env(isolated_env: dict[str, str], module_database_url: str) -> dict[str, str]:
    """A vhost no worker consumes, and a database of this module's own: the counts are this test's alone."""
    return {**isolated_env, "DATABASE_URL": module_database_url}


@pytest.fixture()
def held_message(env: dict[str, str]) -> Iterator[Connection]:
    """An AMQP connection to the vhost, for a test to take a message on without acknowledging it."""
    with Connection(env["CELERY_BROKER_URL"]) as connection:
        yield connection


def test_the_backlog_is_exported_with_no_worker_running(
    make_app: MakeApp, env: dict[str, str], held_message: Connection
) -> None:
    app = make_app(env, tenant="operators", admin=True)
    jobs = [submit(app, [image_bytes(40, 30, seed=uuid.uuid4().int % 10**6)]) for _ in range(QUEUED_JOBS)]
    # Taken and not acknowledged, as a worker holds the task it runs (task_acks_late).
    taken = celery_config.QUEUES[0](held_message.default_channel).get(no_ack=False)
    assert taken is not None and taken.payload[0][0] in jobs

    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        now = scrape(app)
        ready = value(now, "yolo_queue_messages", queue=INFERENCE, state="ready")
        unacked = value(now, "yolo_queue_messages", queue=INFERENCE, state="unacknowledged")
        return now if (ready, unacked) == (QUEUED_JOBS - 1, 1) else None

    now = wait_until(counted, STATS_DELAY, interval=0.5, what="the management API's counts")
    assert value(now, "yolo_queue_consumers", queue=INFERENCE) == 0, "no worker: basic_get is no consumer"
    # An empty queue answers zeros, as does one nothing was ever sent to; a series per queue, always.
    assert value(now, "yolo_queue_messages", queue=WEBHOOKS, state="ready") == 0
    assert value(now, "yolo_queue_messages", queue=WEBHOOKS, state="unacknowledged") == 0
    assert {labels for name, labels in now if name == "yolo_queue_consumers"} == {
        (("queue", queue.name),) for queue in celery_config.QUEUES
    }
    # PostgreSQL's view: the jobs are queued whatever the broker did with their messages.
    assert value(now, "yolo_jobs_queued", model="shapes") == QUEUED_JOBS
    assert value(now, "yolo_backlog_up", source="rabbitmq") == 1
    assert value(now, "yolo_backlog_up", source="postgresql") == 1
    assert value(now, "yolo_api_requests_total", method="POST", endpoint="/api/v1/jobs", status="202") is not None


def test_a_cancelled_job_leaves_the_count_at_the_next_scrape(make_app: MakeApp, env: dict[str, str]) -> None:
    """The database is read at each scrape, nothing is cached."""
    app = make_app(env, tenant="operators", admin=True)
    before = value(scrape(app), "yolo_jobs_queued", model="shapes")
    job_id = submit(app, [image_bytes(40, 30, seed=uuid.uuid4().int % 10**6)])
    assert value(scrape(app), "yolo_jobs_queued", model="shapes") == (before or 0) + 1
    assert app.test_client().post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    assert value(scrape(app), "yolo_jobs_queued", model="shapes") == before


def test_the_api_under_gunicorn_adds_the_backlog_to_its_recorded_metrics(api_url: str, admin_key: TestKey) -> None:
    response = requests.get(f"{api_url}/metrics", headers=admin_key.headers, timeout=10)
    assert response.status_code == 200
    scraped = samples(response.text)
    assert value(scraped, "yolo_backlog_up", source="rabbitmq") == 1
    assert value(scraped, "yolo_backlog_up", source="postgresql") == 1
    assert value(scraped, "yolo_queue_messages", queue=INFERENCE, state="ready") is not None
    assert any(name == "yolo_api_requests_total" for name, _labels in scraped), "the processes' metrics come first"


@pytest.fixture()
def hung_port() -> Iterator[int]:
    """A port that accepts connections and never answers (the kernel completes the handshake; nobody reads)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("failure", ["refused", "hung", "wrong-credentials"])
def test_a_management_api_that_does_not_answer_leaves_the_queues_out_in_bounded_time(
    make_app: MakeApp, env: dict[str, str], hung_port: int, failure: str
) -> None:
    url = {
        "refused": f"http://127.0.0.1:{free_port()}",
        "hung": f"http://127.0.0.1:{hung_port}",
        "wrong-credentials": "http://guest:not-the-password@127.0.0.1:15672",
    }[failure]
    app = make_app(env, tenant="operators", admin=True, RABBITMQ_MANAGEMENT_URL=url)
    started = time.monotonic()
    scraped = scrape(app)
    took = time.monotonic() - started
    assert took < TIMEOUT.connect_timeout + TIMEOUT.read_timeout + 1, f"a scrape took {took:.1f}s"
    if failure == "hung":
        assert took >= TIMEOUT.read_timeout, "it waited for the answer, and no longer"
    assert value(scraped, "yolo_backlog_up", source="rabbitmq") == 0
    assert queue_series(scraped) == [], "no number nobody read: the series are absent, not zero"
    assert value(scraped, "yolo_backlog_up", source="postgresql") == 1
    assert value(scraped, "yolo_jobs_queued", model="shapes") is not None


def test_an_unreachable_database_leaves_the_jobs_out(services_env: dict[str, str]) -> None:
    """The collector alone (/metrics itself needs the database, for the admin's key)."""
    database = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing_here")
    try:
        management = ManagementApi.of_broker(services_env["CELERY_BROKER_URL"])
        collector = BacklogCollector(management, database, [INFERENCE])
        families = {family.name: family for family in collector.collect()}
    finally:
        database.engine.dispose()
    up = {sample.labels["source"]: sample.value for sample in families["yolo_backlog_up"].samples}
    assert up == {"rabbitmq": 1, "postgresql": 0}
    assert families["yolo_jobs_queued"].samples == []
    assert [s.labels for s in families["yolo_queue_messages"].samples] == [
        {"queue": INFERENCE, "state": "ready"},
        {"queue": INFERENCE, "state": "unacknowledged"},
    ]

"""The backlog gauges ``/metrics`` reads at scrape time: messages per queue, queued jobs per model.

They are read when Prometheus scrapes, from the broker's management API (``storage.queue_depths``) and
PostgreSQL (``jobs.backlog``), not recorded by the processes that change them: so they are right whichever
gunicorn process answers, and they answer when no worker runs at all, which is when an autoscaler scaling
workers from zero needs them. The API is the one place that exports them (workers may all be gone, and
Prometheus already scrapes it).

- ``yolo_queue_messages{queue, state}``: ``ready`` (waiting for a worker) and ``unacknowledged`` (delivered to
  a worker: the tasks running, each worker process's prefetched one, and a round's mates); their sum is what
  KEDA's RabbitMQ scaler counts with ``protocol: http``.
- ``yolo_queue_consumers{queue}``: the worker processes' consumers of each queue (0: no worker serves it).
- ``yolo_jobs_queued{model}``: jobs waiting for their first or next attempt, per model.
- ``yolo_backlog_up{source}``: 1 when ``rabbitmq`` (the management API) or ``postgresql`` answered this scrape.
  When one did not, its series are left out, never reported as zero: an autoscaler must not scale in on a
  number nobody read, and ``up == 0`` is what to alert on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from jobs.backlog import queued_jobs_by_model
from storage.db import Database
from storage.queue_depths import ManagementApi, QueueStatsUnavailable

log = logging.getLogger(__name__)

# The families' names (openshift/README.md's HPA and prometheus-adapter rule name QUEUE_MESSAGES).
QUEUE_MESSAGES = "yolo_queue_messages"
QUEUE_CONSUMERS = "yolo_queue_consumers"
JOBS_QUEUED = "yolo_jobs_queued"
BACKLOG_UP = "yolo_backlog_up"


class BacklogCollector(Collector):
    """Reads the backlog each time it is collected (one HTTP request, one query)."""

    def __init__(self, management: ManagementApi, database: Database, queues: Sequence[str]) -> None:
        self.management = management
        self.database = database
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(BACKLOG_UP, "Whether this scrape read the source's backlog", labels=["source"])
        messages = GaugeMetricFamily(
            QUEUE_MESSAGES, "Task messages in the queue: ready, or unacknowledged", labels=["queue", "state"]
        )
        consumers = GaugeMetricFamily(QUEUE_CONSUMERS, "Consumers of the queue", labels=["queue"])
        try:
            depths = self.management.depths(self.queues)
        except QueueStatsUnavailable as exc:
            log.warning("queue depths not read from RabbitMQ's management API: %s", exc)
            up.add_metric(["rabbitmq"], 0)
        else:
            up.add_metric(["rabbitmq"], 1)
            for queue, depth in depths.items():
                messages.add_metric([queue, "ready"], depth.ready)
                messages.add_metric([queue, "unacknowledged"], depth.unacknowledged)
                consumers.add_metric([queue], depth.consumers)
        queued = GaugeMetricFamily(JOBS_QUEUED, "Jobs waiting for an attempt, by model", labels=["model"])
        try:
            with self.database.transaction() as session:
                by_model = queued_jobs_by_model(session)
        except SQLAlchemyError as exc:
            log.warning("queued jobs not read from PostgreSQL: %s", type(exc).__name__)
            up.add_metric(["postgresql"], 0)
        else:
            up.add_metric(["postgresql"], 1)
            for model, count in by_model.items():
                queued.add_metric([model], count)
        yield from (messages, consumers, queued, up)

"""How many task messages wait in RabbitMQ's queues, and how many are out with a worker: the broker's management
HTTP API, the numbers KEDA's RabbitMQ scaler reads with ``protocol: http``.

AMQP cannot tell it: a passive ``queue_declare`` answers the *ready* messages only. A task is acknowledged after
it ran (``task_acks_late``), so every job a worker is running is *unacknowledged*, and a queue whose jobs are all
running looks empty over AMQP: an autoscaler reading that would stop the workers running them. One
``GET /api/queues/<vhost>`` answers both numbers for every queue of the vhost.

The management API is another port of the broker (15672, the ``rabbitmq_management`` plugin), with the same
users: unless ``RABBITMQ_MANAGEMENT_URL`` says otherwise it is the broker's host on that port, with the broker
URL's user and password, and always the broker URL's vhost. Each read waits :data:`TIMEOUT` at most and raises
:class:`QueueStatsUnavailable` for anything but an answer, so a scrape of ``/metrics`` never hangs on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

import urllib3

# Connecting, then reading the answer: a management API that does not answer costs a scrape this much at most.
TIMEOUT = urllib3.Timeout(connect=1.0, read=2.0)
MANAGEMENT_PORT = 15672
COLUMNS = "name,messages_ready,messages_unacknowledged,consumers"


class QueueStatsUnavailable(Exception):
    """The management API did not answer with the queues (unreachable, refused, timed out, or not its answer)."""


@dataclass(frozen=True)
class QueueDepth:
    """A queue's messages waiting for a consumer (ready), delivered and not yet acknowledged, and its consumers."""

    ready: int = 0
    unacknowledged: int = 0
    consumers: int = 0


@dataclass(frozen=True)
class ManagementApi:
    """The management API of the broker's vhost: its base URL (without credentials), user and password."""

    base_url: str
    username: str
    password: str = field(repr=False)  # never in a traceback or a log line
    vhost: str

    @classmethod
    def of_broker(cls, broker_url: str, management_url: str | None = None) -> ManagementApi:
        """The management API of ``broker_url``'s vhost: at ``management_url`` when given (its credentials, else
        the broker's), else on the broker's host at :data:`MANAGEMENT_PORT`."""
        broker = urlsplit(broker_url)
        # kombu's rule: the path after the first slash is the vhost, '/' when empty ('amqp://host//' is '/').
        vhost = unquote(broker.path[1:]) or "/"
        if management_url is None:
            management_url = f"http://{broker.hostname or 'localhost'}:{MANAGEMENT_PORT}"
        given = urlsplit(management_url)
        credentials = given if given.username is not None else broker
        netloc = given.netloc.rpartition("@")[2]
        return cls(
            f"{given.scheme}://{netloc}{given.path.rstrip('/')}",
            unquote(credentials.username or "guest"),
            unquote(credentials.password or "guest"),
            vhost,
        )

    def depths(self, names: Iterable[str]) -> dict[str, QueueDepth]:
        """The depth of each queue named, in the order named (all zero for one the broker has not declared yet:
        nothing was ever sent to it, or it went with its vhost)."""
        url = f"{self.base_url}/api/queues/{quote(self.vhost, safe='')}?columns={COLUMNS}"
        headers = urllib3.make_headers(basic_auth=f"{self.username}:{self.password}")
        try:
            response = urllib3.request("GET", url, headers=headers, timeout=TIMEOUT, retries=False, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            raise QueueStatsUnavailable(f"{self.base_url}: {type(exc).__name__}") from None
        if response.status != 200:
            raise QueueStatsUnavailable(f"{self.base_url} answered {response.status}")
        try:
            listed = {queue["name"]: queue for queue in json.loads(response.data)}
        except (ValueError, TypeError, KeyError):
            raise QueueStatsUnavailable(f"{self.base_url} did not answer a list of queues") from None
        return {name: _depth(listed.get(name, {})) for name in names}


def _depth(queue: dict[str, int]) -> QueueDepth:
    """A queue's numbers (a queue the stats have not reached yet lacks them: zero)."""
    return QueueDepth(
        queue.get("messages_ready", 0), queue.get("messages_unacknowledged", 0), queue.get("consumers", 0)
    )

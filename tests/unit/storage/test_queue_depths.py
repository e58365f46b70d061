"""RabbitMQ's management API as storage.queue_depths reads it: where it is, from the broker URL, and what its
answers mean. A local HTTP server plays the management API, answering what a test gives it."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from storage.queue_depths import ManagementApi, QueueDepth, QueueStatsUnavailable


class FakeManagement(ThreadingHTTPServer):
    """Answers every GET with ``status`` and ``body``, and keeps each request's path and Authorization."""

    status = 200
    body: bytes = b"[]"
    requests: list[tuple[str, str]]


class Handler(BaseHTTPRequestHandler):
    server: FakeManagement

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Authorization", "")))
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[FakeManagement]:
    with FakeManagement(("127.0.0.1", 0), Handler) as fake:
        fake.requests = []
        thread = threading.Thread(target=fake.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        yield fake
        fake.shutdown()
        thread.join(5)


def api_of(server: FakeManagement, vhost: str = "yolo") -> ManagementApi:
    port = server.server_address[1]
    return ManagementApi.of_broker(f"amqp://yolo:p%40ss@mq:5672/{vhost}", f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize(
    ("broker", "management", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", None, ("http://127.0.0.1:15672", "guest", "guest", "/")),
        ("amqp://yolo:p%40ss@mq:5672/yolo", None, ("http://mq:15672", "yolo", "p@ss", "yolo")),
        (
            "amqp://yolo:pw@mq:5672",
            "https://mq.example.com/rabbit/",
            ("https://mq.example.com/rabbit", "yolo", "pw", "/"),
        ),
        ("amqp://yolo:pw@mq/v%2Fh", "http://ops:secret@mq:15672", ("http://mq:15672", "ops", "secret", "v/h")),
    ],
)
def test_the_management_api_follows_the_broker_url(
    broker: str, management: str | None, expected: tuple[str, str, str, str]
) -> None:
    api = ManagementApi.of_broker(broker, management)
    assert (api.base_url, api.username, api.password, api.vhost) == expected


def test_one_request_reads_every_queue_named_in_order(server: FakeManagement) -> None:
    server.body = json.dumps(
        [
            {"name": "webhooks", "messages_ready": 0, "messages_unacknowledged": 2, "consumers": 4},
            {"name": "inference", "messages_ready": 7, "messages_unacknowledged": 1, "consumers": 1},
            {"name": "celeryev.abc", "messages_ready": 9, "messages_unacknowledged": 0, "consumers": 1},
            {"name": "maintenance"},  # declared a moment ago: no stats yet
        ]
    ).encode()
    depths = api_of(server, vhost="/").depths(["inference", "maintenance", "webhooks", "never-declared"])
    assert list(depths.items()) == [
        ("inference", QueueDepth(7, 1, 1)),
        ("maintenance", QueueDepth(0, 0, 0)),
        ("webhooks", QueueDepth(0, 2, 4)),
        ("never-declared", QueueDepth(0, 0, 0)),
    ]
    [(path, authorization)] = server.requests
    assert path.startswith("/api/queues/%2F?columns=")
    assert base64.b64decode(authorization.removeprefix("Basic ")) == b"yolo:p@ss"


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (401, b'{"error":"not_authorized","reason":"Login failed"}', "answered 401"),
        (404, b'{"error":"Object Not Found","reason":"Not Found"}', "answered 404"),  # no such vhost
        (200, b'{"error":"not a list"}', "did not answer a list of queues"),
        (200, b"<html>a proxy's page</html>", "did not answer a list of queues"),
        (200, b'[{"messages_ready": 1}]', "did not answer a list of queues"),
    ],
)
def test_anything_but_a_list_of_queues_is_unavailable(
    server: FakeManagement, status: int, body: bytes, says: str
) -> None:
    server.status, server.body = status, body
    with pytest.raises(QueueStatsUnavailable, match=says) as raised:
        api_of(server).depths(["inference"])
    assert "p@ss" not in str(raised.value) and "p%40ss" not in str(raised.value), "no password in the message"

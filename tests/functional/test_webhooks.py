"""job.finished webhooks end to end: signed, retried, stopped by 410, swept when lost, refused on private addresses.

The session's real inference worker ends the jobs; the module adds a real worker on the
webhooks queue (loopback allowed, a shortened retry schedule, a 1 s sweep grace that the
test triggers as beat would), an in-process API, and a real HTTP receiver
on loopback (``http.server`` in a thread) that answers from a script per path and
keeps every request it got. Signatures are checked with the ``standardwebhooks``
package's own ``Webhook.verify``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from flask import Flask
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

import celery_config
from app import extensions
from config import Settings
from harness.images import image_bytes
from harness.processes import ServiceProcess, start_worker, wait_until
from jobs.lifecycle import cancel_job
from jobs.messages import SWEEP_WEBHOOKS_TASK
from storage import Storage
from tests.conftest import keyed_app
from tests.helpers import create_queued_job, key_of, submit

# Retries 0.3 s apart (three of them), so a test sees the whole schedule in about a second.
RETRY_SCHEDULE = "0.3,0.3,0.3"
PUBLIC_URL = "https://yolo.example"


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on loopback: each path answers its scripted statuses in turn (the last one for ever)."""

    server: ThreadingHTTPServer
    scripts: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    received: dict[str, list[Received]] = field(default_factory=dict)

    def url(self, *answers: int | tuple[int, dict[str, str]]) -> str:
        path = f"/hooks/{uuid.uuid4().hex}"
        self.scripts[path] = [a if isinstance(a, tuple) else (a, {}) for a in answers]
        self.received[path] = []
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def requests_to(self, url: str) -> list[Received]:
        return self.received[url.split(str(self.server.server_address[1]), 1)[1]]

    def wait_for(self, url: str, count: int, timeout: float = 60) -> list[Received]:
        wait_until(lambda: len(self.requests_to(url)) >= count, timeout, what=f"{count} webhook requests")
        return self.requests_to(url)


def serve(receiver_ref: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = receiver_ref[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.received[self.path].append(Received(time.monotonic(), dict(self.headers.items()), body))
            script = receiver.scripts[self.path]
            status, headers = script.pop(0) if len(script) > 1 else script[0]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    ref: list[Receiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), serve(ref))
    ref.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ref[0]
    server.shutdown()
    server.server_close()


@dataclass
class Stack:
    env: dict[str, str]
    app: Flask
    storage: Storage
    logs: Path
    celery: Celery


@pytest.fixture(scope="module")
def stack(services_env: dict[str, str], worker: ServiceProcess, logs_dir: Path) -> Iterator[Stack]:
    """The session's inference worker ends the jobs; a webhooks worker of this module's delivers (loopback allowed)."""
    env = {
        **services_env,
        "WEBHOOK_ALLOW_PRIVATE": "1",
        "WEBHOOK_RETRY_SCHEDULE": RETRY_SCHEDULE,
        "WEBHOOK_SWEEP_INTERVAL_SECONDS": "1",
        "PUBLIC_URL": PUBLIC_URL,
    }
    logs = logs_dir / "webhooks"
    settings = Settings.from_env(env)
    app = keyed_app(settings)
    storage = Storage(settings.database_url, settings.storage_root)
    deliverer = start_worker(env, logs / "worker.log", queues="webhooks", concurrency=1)
    celery = Celery(set_as_current=False)
    celery.config_from_object({**celery_config.from_settings(settings), "result_backend": None})
    try:
        yield Stack(env, app, storage, logs, celery)
    finally:
        deliverer.stop()
        celery.close()
        extensions.dispose(app)
        storage.dispose()


def job_json(app: Flask, job_id: str) -> dict[str, Any]:
    response = app.test_client().get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200
    return response.get_json()


def webhook_settled(app: Flask, job_id: str, status: str) -> dict[str, Any]:
    """The job once its webhook has reached ``status`` (for ``wait_until``)."""
    job = job_json(app, job_id)
    return job if job["webhook"]["status"] == status else {}


def secret_of(app: Flask) -> str:
    response = app.test_client().get("/api/v1/account")
    assert response.status_code == 200
    return response.get_json()["webhook_secret"]


def test_a_finished_job_posts_a_signed_event(stack: Stack, receiver: Receiver) -> None:
    url = receiver.url(204)
    job_id = submit(stack.app, [image_bytes(seed=1)], callback_url=url)
    [request] = receiver.wait_for(url, 1)
    event = Webhook(secret_of(stack.app)).verify(request.body, request.headers)
    assert event["type"] == "job.finished"
    assert event["data"] == {
        "job_id": job_id,
        "status": "succeeded",
        "counts": {"total": 1, "done": 1, "errors": 0},
        "links": {"job": f"{PUBLIC_URL}/api/v1/jobs/{job_id}", "page": f"{PUBLIC_URL}/jobs/{job_id}"},
    }
    assert request.headers["webhook-id"].startswith("msg_")
    with pytest.raises(WebhookVerificationError):  # the signature covers the body
        Webhook(secret_of(stack.app)).verify(request.body.replace(b"succeeded", b"cancelled"), request.headers)
    job = wait_until(lambda: webhook_settled(stack.app, job_id, "delivered"), 30, what="delivered")
    assert job["webhook"]["url"] == url
    [attempt] = job["webhook"]["attempts"]
    assert attempt["http_status"] == 204 and attempt["error"] is None and attempt["duration_ms"] >= 0


def test_two_failures_then_success_make_three_attempts_after_retry_after(stack: Stack, receiver: Receiver) -> None:
    url = receiver.url(500, (500, {"Retry-After": "2"}), 204)  # 2 s: later than the schedule's 0.3 s
    job_id = submit(stack.app, [image_bytes(seed=2)], callback_url=url)
    requests = receiver.wait_for(url, 3)
    assert len({r.headers["webhook-id"] for r in requests}) == 1  # one message, retried
    assert requests[2].at - requests[1].at >= 2  # Retry-After honoured
    secret = secret_of(stack.app)
    assert all(Webhook(secret).verify(r.body, r.headers)["data"]["job_id"] == job_id for r in requests)
    job = wait_until(lambda: webhook_settled(stack.app, job_id, "delivered"), 30, what="delivered")
    assert [a["http_status"] for a in job["webhook"]["attempts"]] == [500, 500, 204]
    assert job["status"] == "succeeded" and len(receiver.requests_to(url)) == 3


def test_410_stops_delivery_to_that_url(stack: Stack, receiver: Receiver) -> None:
    url = receiver.url(410)
    tenant_id = key_of(stack.app).tenant_id
    earlier = create_queued_job(stack.storage, image_bytes(seed=3), tenant_id=tenant_id, callback_url=url)
    job_id = submit(stack.app, [image_bytes(seed=4)], callback_url=url)
    receiver.wait_for(url, 1)
    job = wait_until(lambda: webhook_settled(stack.app, job_id, "gone"), 30, what="gone")
    assert [a["http_status"] for a in job["webhook"]["attempts"]] == [410]
    assert job["status"] == "succeeded"
    # A job submitted before the 410 that ends afterwards sends nothing to that URL either.
    assert stack.app.test_client().post(f"/api/v1/jobs/{earlier}/cancel").status_code == 202
    job = wait_until(lambda: webhook_settled(stack.app, str(earlier), "gone"), 30, what="gone")
    assert job["webhook"]["attempts"] == [] and job["status"] == "cancelled"
    time.sleep(1)  # longer than the whole retry schedule
    assert len(receiver.requests_to(url)) == 1


def test_the_sweep_sends_a_delivery_whose_message_was_lost(stack: Stack, receiver: Receiver) -> None:
    """A job ended by a process that never sent the delivery's task (it died after commit): the sweep does."""
    url = receiver.url(204)
    job_id = create_queued_job(
        stack.storage, image_bytes(seed=5), tenant_id=key_of(stack.app).tenant_id, callback_url=url
    )
    with stack.storage.database.transaction() as session:  # these sessions publish nothing after commit
        assert cancel_job(session, job_id)
    time.sleep(1.2)  # the sweep re-sends deliveries overdue by its interval (1 s here)
    assert receiver.requests_to(url) == []
    stack.celery.send_task(SWEEP_WEBHOOKS_TASK)  # as beat does every WEBHOOK_SWEEP_INTERVAL_SECONDS
    [request] = receiver.wait_for(url, 1, timeout=30)
    assert json.loads(request.body)["data"]["status"] == "cancelled"
    wait_until(lambda: webhook_settled(stack.app, str(job_id), "delivered"), 30, what="delivered")


def test_a_private_address_is_refused_without_the_flag(
    stack: Stack, receiver: Receiver, isolated_env: dict[str, str]
) -> None:
    """A webhooks worker without WEBHOOK_ALLOW_PRIVATE, on a vhost of its own, refuses loopback and records why."""
    env = {**stack.env, "CELERY_BROKER_URL": isolated_env["CELERY_BROKER_URL"], "WEBHOOK_ALLOW_PRIVATE": "0"}
    strict = start_worker(env, stack.logs / "strict-worker.log", queues="webhooks", concurrency=1)
    app = keyed_app(Settings.from_env(env))
    try:
        url = receiver.url(204)
        job_id = submit(app, [image_bytes(seed=6)], callback_url=url)  # nothing consumes its inference queue
        assert app.test_client().post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
        job = wait_until(lambda: webhook_settled(app, job_id, "refused"), 30, what="refused")
    finally:
        strict.stop()
        extensions.dispose(app)
    [attempt] = job["webhook"]["attempts"]
    assert attempt["http_status"] is None
    assert attempt["error"] == "refused: 127.0.0.1 resolves to 127.0.0.1, which is not a public address"
    assert job["status"] == "cancelled"
    assert receiver.requests_to(url) == []

"""Task messages carry only IDs: a few hundred bytes of JSON, whatever the file size."""

from __future__ import annotations

import json
import subprocess

from kombu import Connection
from kombu.message import Message

from app.extensions import get_dispatcher
from harness.images import image_bytes
from harness.processes import wait_until
from jobs.messages import DETECT_TASK
from tests.conftest import MakeApp
from tests.helpers import post_images, submit

MAX_BODY_BYTES = 1024


def fetch_raw_message(broker_url: str) -> Message:
    with Connection(broker_url) as connection:
        channel = connection.channel()
        return wait_until(lambda: channel.basic_get("inference", no_ack=True), 10, what="a message on inference")


def test_message_body_stays_under_1kib_for_a_large_file(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    app = make_app(isolated_env)
    big = image_bytes(1400, 1200, seed=11, fmt="BMP")
    assert len(big) > 5_000_000
    response = post_images(app.test_client(), ("big.bmp", big))
    assert response.status_code == 202, response.get_data(as_text=True)
    job_id = response.get_json()["job_id"]

    message = fetch_raw_message(isolated_env["CELERY_BROKER_URL"])
    body = message.body if isinstance(message.body, bytes) else message.body.encode()
    headers = json.dumps(message.headers).encode()
    print(f"\nmessage body {len(body)} bytes, headers {len(headers)} bytes, file {len(big)} bytes")
    assert len(body) < MAX_BODY_BYTES
    assert message.properties["content_type"] == "application/json"
    assert message.properties["delivery_mode"] == 2  # persistent
    args, kwargs, _embed = json.loads(body)
    assert args == [job_id] and kwargs == {}
    assert message.headers["task"] == DETECT_TASK == "tasks.detection.detect"
    assert len(headers) < MAX_BODY_BYTES


def test_queues_are_durable_and_publishing_waits_for_confirms(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    app = make_app(isolated_env)
    with app.app_context():
        assert get_dispatcher().celery.conf.broker_transport_options["confirm_publish"] is True
    submit(app, [image_bytes()])
    vhost = isolated_env["CELERY_BROKER_URL"].rsplit("/", 1)[1]
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "durable", "messages"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = {line.split()[0]: line.split()[1:] for line in listing.splitlines()[1:] if line.strip()}
    assert rows["inference"] == ["true", "1"]

"""The views' side of the job service: every submission outcome but a replay is counted once, by the status it is
answered with, and a cancel or retry that happened is counted, whether it came from the API or a web page.

In-process apps on the run's services (a RabbitMQ vhost of the test's own, no worker: jobs stay queued).
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from harness.images import image_bytes
from harness.processes import free_port
from tests.conftest import MakeApp
from tests.helpers import multipart, post_images


def tenant() -> str:
    """A tenant of the test's own, so no upload of another test deduplicates its bytes."""
    return f"actions-{uuid.uuid4().hex[:8]}"


def counted() -> dict[str, float]:
    """The submission and action counters now."""
    samples = {
        **{
            f"jobs:{s}": ("yolo_api_jobs_created_total", {"status": s})
            for s in ("queued", "rejected", "unavailable", "error")
        },
        "bytes": ("yolo_api_upload_bytes_total", {}),
        **{f"action:{a}": ("yolo_api_job_actions_total", {"action": a}) for a in ("cancel", "retry")},
    }
    return {name: REGISTRY.get_sample_value(metric, labels) or 0.0 for name, (metric, labels) in samples.items()}


def grown(before: dict[str, float]) -> dict[str, float]:
    """What each counter grew by since ``before`` (the ones that did not grow left out)."""
    return {name: value - before[name] for name, value in counted().items() if value != before[name]}


def test_a_submission_is_counted_once_and_its_replay_not_at_all(
    make_app: MakeApp, isolated_env: dict[str, str]
) -> None:
    client = make_app(isolated_env, tenant=tenant()).test_client()
    image = image_bytes(seed=71)
    before = counted()
    assert post_images(client, ("a.png", image), conf="2").status_code == 400
    assert grown(before) == {"jobs:rejected": 1}
    before = counted()
    headers = {"Idempotency-Key": "k-1"}
    body, content_type = multipart([("a.png", image)])
    first = client.post("/api/v1/jobs", data=body, content_type=content_type, headers=headers)
    assert first.status_code == 202
    assert grown(before) == {"jobs:queued": 1, "bytes": len(image)}
    before = counted()
    replay = client.post("/api/v1/jobs", data=body, content_type=content_type, headers=headers)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert grown(before) == {}, "a replay made no job"


def test_a_submission_the_broker_did_not_take_is_counted_unavailable(make_app: MakeApp) -> None:
    app = make_app(CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}//", tenant=tenant())
    before = counted()
    response = post_images(app.test_client(), ("a.png", image_bytes(seed=72)))
    assert (response.status_code, response.headers.get("Retry-After")) == (503, "5")
    assert grown(before) == {"jobs:unavailable": 1}


def test_cancel_and_retry_are_counted_when_they_happen(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    app = make_app(isolated_env, tenant=tenant())
    client = app.test_client()
    job_id = post_images(client, ("a.png", image_bytes(seed=73))).get_json()["job_id"]
    before = counted()
    assert client.post(f"/api/v1/jobs/{job_id}/retry").status_code == 409, "a queued job is not retryable"
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 409
    assert grown(before) == {"action:cancel": 1}
    before = counted()
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    form = {"csrf_token": re.findall(r'name="csrf_token" value="([^"]+)"', page)[0]}
    assert client.post(f"/jobs/{job_id}/retry", data=form).status_code == 303
    assert client.post(f"/jobs/{job_id}/retry", data=form).status_code == 409, "queued again: not retryable"
    assert grown(before) == {"action:retry": 1}


def test_an_unexpected_failure_is_counted_as_an_error_and_logged_once(
    make_app: MakeApp, isolated_env: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The blobs' folder replaced by a file: a submission fails unexpectedly (500), counted ``error``; its stack
    trace is logged by what answers it (the API's error handler, the upload form), not by the count too."""
    app = make_app(isolated_env, STORAGE_ROOT=str(tmp_path), tenant=tenant())
    shutil.rmtree(tmp_path / "blobs")
    (tmp_path / "blobs").write_bytes(b"not a folder")
    client = app.test_client()
    before = counted()
    with caplog.at_level(logging.ERROR):
        assert post_images(client, ("a.png", image_bytes(seed=74))).status_code == 500
    assert grown(before) == {"jobs:error": 1}
    assert [record.getMessage() for record in caplog.records] == ["unhandled error"]
    caplog.clear()
    page = client.get("/").get_data(as_text=True)
    form = {"csrf_token": re.findall(r'name="csrf_token" value="([^"]+)"', page)[0]}
    body, content_type = multipart([("a.png", image_bytes(seed=75))], **form)
    with caplog.at_level(logging.ERROR):
        assert client.post("/", data=body, content_type=content_type).status_code == 500
    assert grown(before) == {"jobs:error": 2}
    assert [record.getMessage() for record in caplog.records] == ["unhandled error"]

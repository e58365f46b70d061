"""POST /api/v1/predict: one image's detections in the answer, from a durable job.

Through a real gunicorn and worker: the answer's detections are the job's own result; past ``timeout``
the answer is POST /jobs' 202 and the job still ends. In-process on a vhost no worker consumes (the
job stays queued until a test ends it as a worker would): replays under an Idempotency-Key, each way
a job can end, the quotas, the refusals of bad input (no job made), the wait's cap and its bound on
waiting threads, and tenants.
"""

from __future__ import annotations

import io
import time
import uuid
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import TestResponse, encode_multipart

from harness.images import image_bytes
from harness.processes import ServiceProcess, wait_for_job
from jobs.lifecycle import FileResult, fail_job
from storage import Storage
from storage.tables import Job
from tests.conftest import MakeApp
from tests.helpers import app_key, complete_job
from tests.unit.storage.test_media import video_bytes
from training.shapes import render_sample

SQUARE = {"name": "square", "class": 1, "confidence": 0.9, "box": {"x1": 2.0, "y1": 2.0, "x2": 20.0, "y2": 20.0}}


def shapes_png(seed: int) -> bytes:
    buffer = io.BytesIO()
    render_sample(seed, 0)[0].save(buffer, format="PNG")
    return buffer.getvalue()


def post_predict(
    client: FlaskClient, parts: list[tuple[str, str, bytes]], key: str | None = None, **form: str
) -> TestResponse:
    """POST /api/v1/predict in-process with ``(field, filename, bytes)`` parts and form fields."""
    files = [(field, FileStorage(io.BytesIO(data), filename=name)) for field, name, data in parts]
    boundary, body = encode_multipart(MultiDict([*form.items(), *files]))
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(
        "/api/v1/predict", data=body, content_type=f'multipart/form-data; boundary="{boundary}"', headers=headers
    )


def predict_one(client: FlaskClient, data: bytes, key: str | None = None, **form: str) -> TestResponse:
    return post_predict(client, [("file", "one.png", data)], key, **form)


def error_code(response: TestResponse | requests.Response, status: int) -> str:
    body: dict[str, Any] = response.json() if isinstance(response, requests.Response) else response.get_json()
    assert response.status_code == status, body
    assert body["error"]["message"], body
    return str(body["error"]["code"])


def job_count(storage: Storage) -> int:
    with storage.database.transaction() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def quiet(make_app: MakeApp, isolated_env: dict[str, str]) -> Flask:
    """An app whose jobs no worker takes, for a tenant of its own."""
    return make_app(isolated_env, tenant=unique("predict"))


# Through gunicorn and a worker


def test_the_answer_is_the_jobs_own_result(api: requests.Session, api_url: str, worker: ServiceProcess) -> None:
    files = {"file": ("shapes.png", shapes_png(31), "application/octet-stream")}
    response = api.post(f"{api_url}/api/v1/predict", files=files, data={"conf": "0.3", "timeout": "60"}, timeout=90)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded" and body["url"] == f"/api/v1/jobs/{body['job_id']}"
    assert body["detections"], "the shapes model finds the shapes"
    job = api.get(f"{api_url}{body['url']}", timeout=5).json()
    assert job["status"] == "succeeded" and job["parameters"] == body["parameters"]
    assert job["parameters"]["conf"] == 0.3
    (result,) = job["results"]
    assert {name: body[name] for name in result} == result, "the detections are the job's result, as it records them"
    assert body["filename"] == "shapes.png" and (body["width"], body["height"]) == (result["width"], result["height"])


def test_timeout_0_answers_the_submissions_202_and_the_job_runs_on(
    api: requests.Session, api_url: str, worker: ServiceProcess
) -> None:
    files = {"file": ("later.png", shapes_png(32), "application/octet-stream")}
    response = api.post(f"{api_url}/api/v1/predict", files=files, data={"timeout": "0"}, timeout=30)
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"job_id", "status", "files", "files_total"} and body["status"] == "queued"
    assert response.headers["Location"] == f"/api/v1/jobs/{body['job_id']}"
    assert [f["filename"] for f in body["files"]] == ["later.png"] and body["files_total"] == 1
    assert wait_for_job(api_url, body["job_id"], headers=api.headers)["status"] == "succeeded"


def test_tiles_run_as_parts_and_answer_the_merged_result(
    api: requests.Session, api_url: str, worker: ServiceProcess
) -> None:
    files = {"file": ("tiled.png", shapes_png(33), "application/octet-stream")}
    response = api.post(f"{api_url}/api/v1/predict", files=files, data={"tiles": "2", "timeout": "60"}, timeout=90)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["parameters"]["tiles"] == "2" and body["detections"]
    job = api.get(f"{api_url}{body['url']}", timeout=5).json()
    assert {part["kind"] for part in job["parts"]} >= {"tiles"}, job["parts"]
    assert job["results"][0]["detections"] == body["detections"]


# In-process: the job is ended by hand, as a worker would


def test_a_replay_waits_for_the_same_job(quiet: Flask, storage: Storage) -> None:
    client, key, image = quiet.test_client(), unique("key"), image_bytes(seed=9501)
    first = predict_one(client, image, key, timeout="0")
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    job_id, jobs = first.get_json()["job_id"], job_count(storage)

    again = predict_one(client, image, key, timeout="0.05")
    assert again.status_code == 202 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers["Location"] == first.headers["Location"]

    complete_job(storage, job_id, lambda upload: FileResult(upload.id, 64, 48, [SQUARE]))
    done = predict_one(client, image, key)
    assert done.status_code == 200 and done.headers["Idempotent-Replayed"] == "true"
    assert done.get_json()["job_id"] == job_id and done.get_json()["detections"] == [SQUARE]
    assert job_count(storage) == jobs, "a replay makes no job"
    reused = predict_one(client, image_bytes(seed=9502), key)
    assert error_code(reused, 422) == "idempotency_key_reused"


def test_a_failed_job_answers_its_error(quiet: Flask, storage: Storage) -> None:
    client, key, image = quiet.test_client(), unique("key"), image_bytes(seed=9511)
    job_id = predict_one(client, image, key, timeout="0").get_json()["job_id"]
    with storage.database.transaction() as session:
        fail_job(session, uuid.UUID(job_id), "model_unavailable", "The model's weights are missing.")
    failed = predict_one(client, image, key)
    assert error_code(failed, 500) == "model_unavailable"
    body = failed.get_json()
    assert body["error"] == client.get(f"/api/v1/jobs/{job_id}").get_json()["error"], "as the job's body says it"
    assert (body["job_id"], body["status"], body["url"]) == (job_id, "failed", f"/api/v1/jobs/{job_id}")


def test_a_cancelled_job_and_an_undecodable_image(quiet: Flask, storage: Storage) -> None:
    client, key, image = quiet.test_client(), unique("key"), image_bytes(seed=9521)
    job_id = predict_one(client, image, key, timeout="0").get_json()["job_id"]
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    cancelled = predict_one(client, image, key)
    assert error_code(cancelled, 409) == "no_result" and cancelled.get_json()["status"] == "cancelled"

    key, image = unique("key"), image_bytes(seed=9522)
    job_id = predict_one(client, image, key, timeout="0").get_json()["job_id"]
    broken = "the file could not be decoded as an image"
    complete_job(storage, job_id, lambda upload: FileResult(upload.id, None, None, [], broken))
    undecodable = predict_one(client, image, key)
    assert error_code(undecodable, 422) == "undecodable"
    assert undecodable.get_json()["error"]["message"] == f"one.png: {broken}."


def test_the_wait_is_capped_and_leaves_a_thread_free(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    capped = make_app(isolated_env, tenant=unique("capped"), PREDICT_MAX_WAIT_SECONDS="1").test_client()
    started = time.monotonic()
    response = predict_one(capped, image_bytes(seed=9531), timeout="600")
    waited = time.monotonic() - started
    assert response.status_code == 202 and response.get_json()["status"] == "queued"
    assert 1 <= waited < 3, f"waited {waited:.2f} s for a cap of 1 s"

    one_thread = make_app(isolated_env, tenant=unique("single"), API_THREADS="1").test_client()
    started = time.monotonic()
    assert predict_one(one_thread, image_bytes(seed=9532), timeout="5").status_code == 202
    assert time.monotonic() - started < 1, "a process of one thread never holds it waiting"


# Quotas, bad input and tenants


def test_quotas_refuse_as_a_submission(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    rated = make_app(isolated_env, tenant=unique("rate"), QUOTA_JOBS_PER_MINUTE="1").test_client()
    assert predict_one(rated, image_bytes(seed=9541), timeout="0").status_code == 202
    refused = predict_one(rated, image_bytes(seed=9542), timeout="0")
    assert error_code(refused, 429) == "too_many_requests" and int(refused.headers["Retry-After"]) > 0

    busy = make_app(isolated_env, tenant=unique("busy"), QUOTA_ACTIVE_JOBS="1").test_client()
    assert predict_one(busy, image_bytes(seed=9543), timeout="0").status_code == 202
    refused = predict_one(busy, image_bytes(seed=9544))
    assert error_code(refused, 429) == "too_many_active_jobs" and int(refused.headers["Retry-After"]) > 0


def test_bad_input_is_a_4xx_and_makes_no_job(quiet: Flask, storage: Storage) -> None:
    client, png = quiet.test_client(), image_bytes(seed=9551)
    jobs = job_count(storage)
    cases = [
        ([], {}, 400, "no_image"),
        ([("image", "a.png", png)], {}, 400, "no_image"),
        ([("file", "a.png", png), ("file", "b.png", image_bytes(seed=9552))], {}, 400, "too_many_files"),
        ([("file", "a.png", png), ("image", "b.png", png)], {}, 400, "too_many_files"),
        ([("file", "notes.txt", b"not an image at all")], {}, 415, "unsupported_media"),
        ([("file", "clip.mp4", video_bytes())], {}, 415, "unsupported_media"),
        ([("file", "empty.png", b"")], {}, 400, "empty_file"),
        ([("file", "a.png", png)], {"timeout": "-1"}, 400, "invalid_parameter"),
        ([("file", "a.png", png)], {"timeout": "soon"}, 400, "invalid_parameter"),
        ([("file", "a.png", png)], {"timeout": "nan"}, 400, "invalid_parameter"),
        ([("file", "a.png", png)], {"conf": "2"}, 400, "invalid_parameter"),
        ([("file", "a.png", png)], {"model": "nope"}, 400, "unknown_model"),
    ]
    for parts, form, status, code in cases:
        assert error_code(post_predict(client, parts, **form), status) == code, (parts, form)
    no_body = client.post("/api/v1/predict")
    assert error_code(no_body, 400) == "no_image"
    assert "video" in post_predict(client, [("file", "clip.mp4", video_bytes())]).get_json()["error"]["message"]
    assert job_count(storage) == jobs, "a refused prediction makes no job"


def test_another_tenant_sees_nothing(quiet: Flask) -> None:
    alice, key, image = quiet.test_client(), unique("key"), image_bytes(seed=9561)
    bob = quiet.test_client(key=app_key(quiet, unique("bob")))
    job_id = predict_one(alice, image, key, timeout="0").get_json()["job_id"]
    assert error_code(bob.get(f"/api/v1/jobs/{job_id}"), 404) == "not_found"
    theirs = predict_one(bob, image, key, timeout="0")
    assert theirs.status_code == 202 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.get_json()["job_id"] != job_id, "a key is the tenant's own"

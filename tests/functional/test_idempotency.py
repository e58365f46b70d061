"""Idempotency-Key on POST /api/v1/jobs: replay, reuse, in progress, concurrency, expiry, failures store nothing."""

from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from flask import Flask
from sqlalchemy import func, select, text

from harness.images import image_bytes
from jobs.idempotency import Claimed, claim_key, delete_expired_keys, fingerprint
from jobs.lifecycle import JobParams
from storage import Storage
from storage.tables import IdempotencyKey, Job
from tests.conftest import MakeApp
from tests.helpers import TestKey, app_key, key_of, post_images


def post(app: Flask, key: str, *files: tuple[str, bytes], **form: str) -> Any:
    client = app.test_client()
    client.environ_base["HTTP_IDEMPOTENCY_KEY"] = key
    return post_images(client, *files, **form)


def job_count(storage: Storage) -> int:
    with storage.database.transaction() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_same_key_and_request_replays_the_first_answer(
    make_app: MakeApp, isolated_env: dict[str, str], storage
) -> None:
    app = make_app(isolated_env)
    key, image = f"replay-{uuid.uuid4()}", image_bytes(seed=7001)
    first = post(app, key, ("a.png", image), conf="0.4")
    jobs = job_count(storage)
    again = post(app, key, ("a.png", image), conf="0.4")
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert "Idempotent-Replayed" not in first.headers
    assert job_count(storage) == jobs, "a replay makes no job"


def test_same_key_with_another_request_is_422(make_app: MakeApp, isolated_env: dict[str, str], storage) -> None:
    app = make_app(isolated_env)
    key = f"reuse-{uuid.uuid4()}"
    assert post(app, key, ("a.png", image_bytes(seed=7002))).status_code == 202
    jobs = job_count(storage)
    for response in (
        post(app, key, ("a.png", image_bytes(seed=7003))),  # other bytes
        post(app, key, ("a.png", image_bytes(seed=7002)), conf="0.9"),  # other parameters
    ):
        assert response.status_code == 422 and response.get_json()["error"]["code"] == "idempotency_key_reused"
    assert job_count(storage) == jobs


def test_same_key_while_the_first_is_in_progress_is_409(
    make_app: MakeApp, isolated_env: dict[str, str], storage: Storage
) -> None:
    app = make_app(isolated_env)
    key, image = f"busy-{uuid.uuid4()}", image_bytes(seed=7004)
    digest = hashlib.sha256(image).hexdigest()
    request = fingerprint(JobParams(model="shapes"), [digest])
    with storage.database.transaction() as session:  # a first request holds the claim
        assert claim_key(session, key_of(app).tenant_id, key, request) == Claimed()
    response = post(app, key, ("a.png", image))
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "idempotency_key_in_progress"
    assert int(response.headers["Retry-After"]) > 0


def test_concurrent_requests_with_one_key_make_one_job(api_url: str, api_key: TestKey, storage: Storage) -> None:
    key, image = f"race-{uuid.uuid4()}", image_bytes(seed=7005)
    headers = {**api_key.headers, "Idempotency-Key": key}

    def send(_: int) -> requests.Response:
        files = [("image", ("a.png", image))]
        return requests.post(f"{api_url}/api/v1/jobs", files=files, headers=headers, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(8)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {202, 409} and 202 in codes, codes
    job_ids = {r.json()["job_id"] for r in responses if r.status_code == 202}
    assert len(job_ids) == 1
    with storage.database.transaction() as session:
        row = session.get(IdempotencyKey, (api_key.tenant_id, key))
        assert row is not None and str(row.job_id) in job_ids


def test_expired_keys_are_forgotten_and_deleted(make_app: MakeApp, isolated_env: dict[str, str], storage) -> None:
    app = make_app(isolated_env)
    key = f"old-{uuid.uuid4()}"
    first = post(app, key, ("a.png", image_bytes(seed=7006)))
    with storage.database.transaction() as session:
        session.execute(
            text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = :k"), {"k": key}
        )
    fresh = post(app, key, ("a.png", image_bytes(seed=7007)))  # another request: no 422 once expired
    assert fresh.status_code == 202 and fresh.get_json()["job_id"] != first.get_json()["job_id"]
    with storage.database.transaction() as session:
        session.execute(
            text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = :k"), {"k": key}
        )
        assert delete_expired_keys(session) >= 1
        assert session.get(IdempotencyKey, (key_of(app).tenant_id, key)) is None


def test_a_rejected_request_stores_nothing_under_its_key(
    make_app: MakeApp, isolated_env: dict[str, str], storage
) -> None:
    app = make_app(isolated_env)
    key = f"bad-{uuid.uuid4()}"
    assert post(app, key, ("a.txt", b"not an image")).status_code == 415
    with storage.database.transaction() as session:
        assert session.get(IdempotencyKey, (key_of(app).tenant_id, key)) is None
    good = post(app, key, ("a.png", image_bytes(seed=7008)))
    assert good.status_code == 202 and "Idempotent-Replayed" not in good.headers
    assert post(app, "", ("a.png", image_bytes(seed=7008))).status_code == 400  # an empty key is refused


def test_an_abandoned_request_that_made_its_job_is_answered_with_that_job(
    make_app: MakeApp, isolated_env: dict[str, str], storage: Storage
) -> None:
    """The database and the broker failed together: the job stayed, its 202 was never stored."""
    app = make_app(isolated_env)
    key, image = f"orphan-{uuid.uuid4()}", image_bytes(seed=7009)
    first = post(app, key, ("a.png", image))
    job_id = first.get_json()["job_id"]
    with storage.database.transaction() as session:
        session.execute(
            text(
                "UPDATE idempotency_keys SET response = NULL, status_code = NULL,"
                " locked_until = now() - interval '1 second' WHERE key = :k"
            ),
            {"k": key},
        )
    jobs = job_count(storage)
    again = post(app, key, ("a.png", image))
    assert again.status_code == 202 and again.get_json()["job_id"] == job_id
    assert again.headers["Idempotent-Replayed"] == "true"
    assert job_count(storage) == jobs


def test_keys_belong_to_a_tenant(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    """Two tenants may use the same key for different requests: each gets its own job, and no 422."""
    app = make_app(isolated_env)
    key = f"shared-{uuid.uuid4()}"
    mine = post(app, key, ("a.png", image_bytes(seed=7010)))
    other = app.test_client(key=app_key(app, f"other-{uuid.uuid4().hex[:8]}"))
    other.environ_base["HTTP_IDEMPOTENCY_KEY"] = key
    theirs = post_images(other, ("b.png", image_bytes(seed=7011)), conf="0.9")
    assert mine.status_code == theirs.status_code == 202, theirs.get_data(as_text=True)
    assert theirs.get_json()["job_id"] != mine.get_json()["job_id"] and "Idempotent-Replayed" not in theirs.headers
    replay = post_images(other, ("b.png", image_bytes(seed=7011)), conf="0.9")
    assert replay.get_json() == theirs.get_json() and replay.headers["Idempotent-Replayed"] == "true"

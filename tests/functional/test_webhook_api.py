"""The API side of webhooks, in-process: ``callback_url`` on a submission, and the account's signing secret.

Deliveries themselves, through real workers, are in ``test_webhooks.py``.
"""

from __future__ import annotations

import base64

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from harness.images import image_bytes
from storage import Storage
from storage.tables import Job
from tests.helpers import app_key, post_images


def jobs_in(storage: Storage) -> int:
    with storage.database.transaction() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example/in",
        "javascript:alert(1)",
        "hooks.example/in",
        "http:///in",
        "http://user:secret@hooks.example/in",
        "http://hooks.example:99999/in",
        "http://hooks.example/a b",
        "http://hooks.example/\u00e9",
        "https://hooks.example/" + "a" * 2048,
    ],
)
def test_a_bad_callback_url_is_400_and_makes_no_job(client: FlaskClient, storage: Storage, url: str) -> None:
    before = jobs_in(storage)
    response = post_images(client, ("a.png", image_bytes()), callback_url=url)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "invalid_parameter"
    assert "callback_url" in response.get_json()["error"]["message"]
    assert jobs_in(storage) == before


def test_a_job_shows_its_callback_url_and_no_delivery_until_it_ends(client: FlaskClient) -> None:
    url = "https://hooks.example/in?source=yolo"
    # Slow enough that a worker the session started elsewhere cannot end it before the next request.
    response = post_images(client, ("a.png", image_bytes(seed=9)), callback_url=url, imgsz="2048")
    assert response.status_code == 202
    job = client.get(f"/api/v1/jobs/{response.get_json()['job_id']}").get_json()
    assert job["webhook"] == {"url": url, "status": None, "event_id": None, "next_attempt_at": None, "attempts": []}
    plain = post_images(client, ("a.png", image_bytes(seed=10))).get_json()
    assert client.get(f"/api/v1/jobs/{plain['job_id']}").get_json()["webhook"] is None


def test_account_shows_the_tenant_and_a_standard_webhooks_secret(app: Flask, client: FlaskClient) -> None:
    account = client.get("/api/v1/account").get_json()
    assert account["tenant"] == "test"
    secret = account["webhook_secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    other = app.test_client(key=app_key(app, "someone-else")).get("/api/v1/account").get_json()
    assert other["tenant"] == "someone-else" and other["webhook_secret"] != secret
    assert app.test_client(key=None).get("/api/v1/account").status_code == 401


def test_rotation_replaces_the_secret_for_the_tenant_alone(app: Flask, client: FlaskClient) -> None:
    other = app.test_client(key=app_key(app, "bystander"))
    before, bystander = client.get("/api/v1/account").get_json(), other.get("/api/v1/account").get_json()
    rotated = client.post("/api/v1/account/webhook-secret")
    assert rotated.status_code == 200
    assert rotated.get_json()["tenant"] == "test"
    assert rotated.get_json()["webhook_secret"].startswith("whsec_")
    assert rotated.get_json()["webhook_secret"] != before["webhook_secret"]
    assert client.get("/api/v1/account").get_json() == rotated.get_json()
    assert other.get("/api/v1/account").get_json() == bystander
    assert app.test_client(key=None).post("/api/v1/account/webhook-secret").status_code == 401

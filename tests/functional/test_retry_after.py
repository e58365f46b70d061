"""Whose ``Retry-After`` a submission's answer carries: the API's own, except on the rate limiter's 429s.

Clients (the ``yolo-jobs`` client among them) wait what ``Retry-After`` says. The rate
limiter's headers (``X-RateLimit-*``, and a ``Retry-After`` of its window's reset, up to
a minute) belong on its own 429s; written on every answer, they turned a 503's or a
507's 5 s into up to 60 s.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from werkzeug.test import TestResponse

from app.errors import RETRY_AFTER_SECONDS
from app.refusals import ACTIVE_JOBS_RETRY_AFTER
from harness.images import image_bytes
from harness.processes import free_port
from tests.conftest import MakeApp
from tests.functional.hardening_support import assert_json_error
from tests.helpers import post_images

RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def tenant() -> str:
    """A tenant of the test's own: the rate is counted per tenant, in the run's Redis."""
    return f"retry-after-{uuid.uuid4().hex[:8]}"


def assert_own_retry_after(response: TestResponse, status: int, code: str, seconds: int) -> None:
    """The API's error with its own ``Retry-After``, and none of the limiter's headers."""
    assert_json_error(response.status_code, response.get_json(), status, code)
    assert response.headers.get("Retry-After") == str(seconds), dict(response.headers)
    assert not [name for name in RATE_LIMIT_HEADERS if name in response.headers], dict(response.headers)


def test_broker_down_503_says_the_apis_retry_after(make_app: MakeApp) -> None:
    app = make_app(CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}//", tenant=tenant())
    response = post_images(app.test_client(), ("a.png", image_bytes(seed=61)))
    assert_own_retry_after(response, 503, "broker_unavailable", RETRY_AFTER_SECONDS)


def test_full_volume_507_says_the_apis_retry_after(make_app: MakeApp, tmpfs_volume: Path) -> None:
    app = make_app(STORAGE_ROOT=str(tmpfs_volume), tenant=tenant())
    response = post_images(app.test_client(), ("big.bmp", image_bytes(800, 800, seed=62, fmt="BMP")))
    assert_own_retry_after(response, 507, "insufficient_storage", RETRY_AFTER_SECONDS)


def test_too_many_active_jobs_429_says_the_apis_retry_after(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    app = make_app(isolated_env, tenant=tenant(), QUOTA_ACTIVE_JOBS="1")  # no worker: the first job stays queued
    client = app.test_client()
    assert post_images(client, ("a.png", image_bytes(seed=63))).status_code == 202
    response = post_images(client, ("a.png", image_bytes(seed=64)))
    assert_own_retry_after(response, 429, "too_many_active_jobs", ACTIVE_JOBS_RETRY_AFTER)


def test_the_limiters_headers_are_on_its_429_only(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    app = make_app(isolated_env, tenant=tenant(), QUOTA_JOBS_PER_MINUTE="2")
    client = app.test_client()
    for seed in (65, 66):
        accepted = post_images(client, ("a.png", image_bytes(seed=seed)))
        assert accepted.status_code == 202
        assert "Retry-After" not in accepted.headers, dict(accepted.headers)
        assert not [name for name in RATE_LIMIT_HEADERS if name in accepted.headers], dict(accepted.headers)
    refused = post_images(client, ("a.png", image_bytes(seed=67)))
    assert_json_error(refused.status_code, refused.get_json(), 429, "too_many_requests")
    assert refused.headers["X-RateLimit-Limit"] == "2" and refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["X-RateLimit-Reset"]) > 0
    assert 0 < int(refused.headers["Retry-After"]) <= 60

"""Failed authentications are throttled per client address: 429 with Retry-After, before any key is looked up.

Against a real gunicorn (addresses given as a trusted proxy would, in X-Forwarded-For),
through a real nginx that believes a proxy in front of it (as behind the OpenShift
router), and in-process where the database's statements are counted. Each test uses
addresses of its own: the counters live in the run's Redis for a minute.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import event

import proxy
from app.extensions import EXTENSION
from harness.processes import ServiceProcess, free_port, start_api, wait_until
from tests.conftest import MakeApp
from tests.functional.hardening_support import assert_json_error
from tests.helpers import TestKey, key_of

FAILURES_PER_MINUTE = 5
WRONG_KEY = f"Bearer yj_0badc0de_{'A' * 43}"


def new_address() -> str:
    """An address no other test uses (IPv6 documentation range)."""
    return f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Stack:
    gunicorn_url: str
    nginx_url: str


@pytest.fixture(scope="module")
def stack(services_env: dict[str, str], logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """gunicorn allowing 5 failures a minute per address, behind an nginx that believes X-Forwarded-For
    from 127.0.0.1 (the tests here stand in for the OpenShift router)."""
    env = {**services_env, "AUTH_FAILURES_PER_MINUTE": str(FAILURES_PER_MINUTE)}
    server, gunicorn_url = start_api(env, logs_dir / "gunicorn-throttle.log")
    directory = tmp_path_factory.mktemp("nginx-throttle")
    port = free_port()
    config = proxy.ProxyConfig(
        listen=f"127.0.0.1:{port}",
        upstream=gunicorn_url.removeprefix("http://"),
        max_body_bytes="3000000",
        read_timeout=30,
        temp_dir=str(directory),
        connections_per_address=32,
        requests_per_second=1000,
        trusted_proxies=("127.0.0.1",),
    )
    conf = directory / "nginx.conf"
    conf.write_text(proxy.render(config))
    nginx = ServiceProcess(proxy.command(conf, directory), env, logs_dir / "nginx-throttle.log").start()
    nginx_url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(nginx_url), 15, what="nginx")
    try:
        yield Stack(gunicorn_url, nginx_url)
    finally:
        nginx.stop()
        server.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).ok
    except requests.ConnectionError:
        return False


def get_jobs(url: str, address: str, authorization: str) -> requests.Response:
    headers = {"Authorization": authorization, "X-Forwarded-For": address}
    return requests.get(f"{url}/api/v1/jobs", headers=headers, timeout=10)


def assert_throttled(response: requests.Response) -> None:
    assert_json_error(response.status_code, response.json(), 429, "too_many_failed_authentications")
    assert 1 <= int(response.headers["Retry-After"]) <= 61


def test_200_wrong_keys_from_one_address_are_throttled_after_the_limit(stack: Stack, api_key: TestKey) -> None:
    address = new_address()
    started = time.monotonic()
    statuses = [get_jobs(stack.gunicorn_url, address, WRONG_KEY).status_code for _ in range(200)]
    seconds = time.monotonic() - started
    print(f"\n200 wrong keys in {seconds:.2f} s: {statuses.count(401)} x 401, {statuses.count(429)} x 429")
    assert statuses[:FAILURES_PER_MINUTE] == [401] * FAILURES_PER_MINUTE
    assert statuses[FAILURES_PER_MINUTE:] == [429] * (200 - FAILURES_PER_MINUTE)
    assert_throttled(get_jobs(stack.gunicorn_url, address, WRONG_KEY))
    # Refused before the key is checked, a good one too; another address is not affected.
    assert_throttled(get_jobs(stack.gunicorn_url, address, f"Bearer {api_key.key}"))
    assert get_jobs(stack.gunicorn_url, new_address(), f"Bearer {api_key.key}").status_code == 200


def test_through_nginx_the_address_is_the_clients_not_the_proxys(stack: Stack, api_key: TestKey) -> None:
    """nginx's peer is 127.0.0.1 for every client here: were that the address, B would be throttled with A."""
    client_a, client_b = new_address(), new_address()
    for _ in range(FAILURES_PER_MINUTE):
        assert get_jobs(stack.nginx_url, client_a, WRONG_KEY).status_code == 401
    assert_throttled(get_jobs(stack.nginx_url, client_a, WRONG_KEY))
    assert get_jobs(stack.nginx_url, client_b, f"Bearer {api_key.key}").status_code == 200
    # nginx's key check before a body is throttled too: A's upload is refused before it is read.
    upload = requests.post(
        f"{stack.nginx_url}/api/v1/jobs",
        headers={"Authorization": f"Bearer {api_key.key}", "X-Forwarded-For": client_a},
        files=[("image", ("a.png", b"\0" * 500_000, "image/png"))],
        timeout=10,
    )
    assert_throttled(upload)


def test_failures_are_counted_in_the_metrics(stack: Stack, admin_key: TestKey) -> None:
    def counted(outcome: str) -> float:
        page = requests.get(f"{stack.gunicorn_url}/metrics", headers={"Authorization": f"Bearer {admin_key.key}"})
        match = re.search(rf'^yolo_api_auth_failures_total{{outcome="{outcome}"}} (\S+)$', page.text, re.M)
        return float(match.group(1)) if match else 0.0

    refused, throttled = counted("refused"), counted("throttled")
    address = new_address()
    assert get_jobs(stack.gunicorn_url, address, "").status_code == 401  # no key: not a failed authentication
    assert counted("refused") == refused
    for _ in range(FAILURES_PER_MINUTE + 3):
        get_jobs(stack.gunicorn_url, address, WRONG_KEY)
    assert counted("refused") - refused == FAILURES_PER_MINUTE
    assert counted("throttled") - throttled == 3


# --- In-process: what the database is asked ---------------------------------------------------------


@pytest.fixture()
def throttled_app(make_app: MakeApp) -> Flask:
    return make_app(AUTH_FAILURES_PER_MINUTE="3")


def statements_during(app: Flask, send: Any) -> tuple[Any, list[str]]:
    """What ``send()`` returned, and the SQL statements the app ran meanwhile."""
    engine = app.extensions[EXTENSION].storage.database.engine
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        return send(), statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize(
    "malformed",
    [
        "yj_0badc0de_short",  # wrong length
        f"yj_0badc0de_{'A' * 42}!",  # wrong alphabet
        f"yj_0BADC0DE_{'A' * 43}",  # prefix not lower-case hex
        f"xx_0badc0de_{'A' * 43}",  # not a yolo-jobs key
        "",
    ],
    ids=["length", "alphabet", "prefix", "kind", "empty"],
)
def test_a_malformed_key_is_refused_without_a_database_lookup(throttled_app: Flask, malformed: str) -> None:
    client = throttled_app.test_client()
    headers = {"Authorization": f"Bearer {malformed}", "X-Forwarded-For": new_address()}
    response, statements = statements_during(throttled_app, lambda: client.get("/api/v1/jobs", headers=headers))
    assert_json_error(response.status_code, response.get_json(), 401, "unauthorized")
    assert statements == []


def test_a_throttled_address_is_refused_without_a_database_lookup(throttled_app: Flask) -> None:
    client = throttled_app.test_client()
    address = new_address()
    wrong = {"Authorization": WRONG_KEY, "X-Forwarded-For": address}
    for _ in range(3):
        assert client.get("/api/v1/jobs", headers=wrong).status_code == 401
    good = {"Authorization": f"Bearer {key_of(throttled_app).key}", "X-Forwarded-For": address}
    response, statements = statements_during(throttled_app, lambda: client.get("/api/v1/jobs", headers=good))
    assert_json_error(response.status_code, response.get_json(), 429, "too_many_failed_authentications")
    assert statements == []


def test_requests_without_credentials_are_not_failed_authentications(throttled_app: Flask) -> None:
    """A script without a key, or a browser polling the API after its session ended, presented nothing to refuse:
    twice the limit of such 401s leave the address's good key (and its first wrong ones) unthrottled."""
    client = throttled_app.test_client(key=None)
    address = {"X-Forwarded-For": new_address()}
    polls = [client.get("/api/v1/jobs", headers=address).status_code for _ in range(6)]
    assert polls == [401] * 6
    assert client.post("/api/v1/jobs", headers=address).status_code == 401
    good = {"Authorization": f"Bearer {key_of(throttled_app).key}", **address}
    assert client.get("/api/v1/jobs", headers=good).status_code == 200
    wrong = {"Authorization": WRONG_KEY, **address}
    assert [client.get("/api/v1/jobs", headers=wrong).status_code for _ in range(4)] == [401, 401, 401, 429]


def test_wrong_keys_at_sign_in_count_too(throttled_app: Flask) -> None:
    client = throttled_app.test_client()
    address = {"X-Forwarded-For": new_address()}

    def sign_in(key: str) -> Any:
        form = client.get("/sign-in", headers=address).get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token, form
        return client.post("/sign-in", data={"key": key, "csrf_token": token.group(1)}, headers=address)

    for _ in range(3):
        assert sign_in(WRONG_KEY.removeprefix("Bearer ")).status_code == 401
    page = sign_in(key_of(throttled_app).key)
    assert page.status_code == 429 and "Too many failed authentications" in page.get_data(as_text=True)
    assert 1 <= int(page.headers["Retry-After"]) <= 61


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(throttled_app: Flask) -> None:
    """A client reaching gunicorn itself cannot pick a fresh address per guess."""
    client = throttled_app.test_client()
    peer = {"REMOTE_ADDR": new_address()}
    statuses = [
        client.get(
            "/api/v1/jobs", headers={"Authorization": WRONG_KEY, "X-Forwarded-For": new_address()}, environ_base=peer
        ).status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]

"""nginx in front of a real gunicorn (``python -m proxy``), over real sockets.

Slow clients hold nginx connections, never gunicorn threads, so /healthz keeps
answering; what nginx refuses itself (a body over MAX_UPLOAD_BYTES, a request line
or headers too long, garbage) is answered with the API's JSON error, and gunicorn's
HTML error pages never get through.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from harness.images import image_bytes
from harness.processes import VENV_BIN, ServiceProcess, free_port, start_api, wait_until
from tests.functional.hardening_support import assert_json_error
from tests.helpers import TestKey

MAX_UPLOAD_BYTES = 1_000_000


@dataclass(frozen=True)
class Proxied:
    url: str
    host: str
    port: int
    key: TestKey
    gunicorn: ServiceProcess


def start_proxy(env: dict[str, str], api_bind: str, directory: Path, log: Path) -> tuple[ServiceProcess, str]:
    """``python -m proxy`` on a free port in front of ``api_bind``; returns it and its base URL."""
    port = free_port()
    proxy_env = {**env, "API_BIND": api_bind, "PROXY_BIND": f"127.0.0.1:{port}"}
    process = ServiceProcess([str(VENV_BIN / "python"), "-m", "proxy", "--dir", str(directory)], proxy_env, log).start()
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert process.running(), process.log_text()
        try:
            requests.get(f"{url}/healthz", timeout=1)
        except requests.ConnectionError:
            return False
        return True

    wait_until(answering, 15, what="nginx")
    return process, url


@pytest.fixture(scope="module")
def proxied(
    services_env: dict[str, str], logs_dir: Path, tmp_path_factory: pytest.TempPathFactory, api_key: TestKey
) -> Iterator[Proxied]:
    env = {**services_env, "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)}
    server, api_url = start_api(env, logs_dir / "gunicorn-proxied.log")
    directory = tmp_path_factory.mktemp("nginx")
    proxy, url = start_proxy(env, api_url.removeprefix("http://"), directory, logs_dir / "nginx.log")
    try:
        yield Proxied(url, "127.0.0.1", int(url.rsplit(":", 1)[1]), api_key, server)
    finally:
        proxy.stop()
        server.stop()


def raw_request(proxied: Proxied, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is; return the status, headers (lower-case names) and body of the answer."""
    with socket.create_connection((proxied.host, proxied.port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def get_with_headers(proxied: Proxied, headers: str, path: str = "/healthz") -> tuple[int, dict[str, str], bytes]:
    request = f"GET {path} HTTP/1.1\r\nHost: {proxied.host}\r\n{headers}Connection: close\r\n\r\n"
    return raw_request(proxied, request.encode())


# --- Slow clients ------------------------------------------------------------------------------


class SlowClient(threading.Thread):
    """Opens a connection and sends ``start``, then one more byte of ``trickle`` a second until stopped."""

    def __init__(self, proxied: Proxied, start: bytes, trickle: bytes, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.proxied, self.start_bytes, self.trickle, self.stop = proxied, start, trickle, stop
        self.sent = 0

    def run(self) -> None:
        with socket.create_connection((self.proxied.host, self.proxied.port), timeout=30) as sock:
            sock.sendall(self.start_bytes)
            for byte in self.trickle:
                if self.stop.wait(1.0):
                    return
                sock.sendall(bytes([byte]))
                self.sent += 1


@pytest.mark.slow
def test_16_slow_clients_leave_healthz_answering_within_2_seconds(proxied: Proxied) -> None:
    stop = threading.Event()
    boundary = "slowslowslow"
    body_start = (
        f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {proxied.key.key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 900000\r\n\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="slow.png"\r\n\r\n'
    ).encode()
    header_start = b"GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: "
    clients = [SlowClient(proxied, body_start, b"\x89" * 100, stop) for _ in range(8)]
    clients += [SlowClient(proxied, header_start, b"a" * 100, stop) for _ in range(8)]
    seen_by_gunicorn = len(proxied.gunicorn.log_text())
    for client in clients:
        client.start()
    latencies = []
    try:
        time.sleep(1.5)  # every slow client is connected and trickling
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = requests.get(f"{proxied.url}/healthz", timeout=2)  # raises past 2 s
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200
            time.sleep(0.25)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=5)
    time.sleep(1)  # had nginx passed them on, gunicorn would log them now, cut short
    print(f"\n/healthz with 16 slow clients: {len(latencies)} probes, max {max(latencies) * 1000:.0f} ms")
    assert all(client.sent >= 4 for client in clients), "a slow client stopped trickling"
    assert max(latencies) < 2.0
    gunicorn_saw = proxied.gunicorn.log_text()[seen_by_gunicorn:]
    assert "/api/v1/jobs" not in gunicorn_saw, "gunicorn saw a slow request before it was whole"


# --- Errors nginx answers itself -------------------------------------------------------------------


def test_a_body_over_max_upload_bytes_is_413_json_before_it_is_read(proxied: Proxied) -> None:
    files = [("image", ("big.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (MAX_UPLOAD_BYTES + 10), "image/png"))]
    response = requests.post(f"{proxied.url}/api/v1/jobs", files=files, headers=proxied.key.headers, timeout=30)
    assert_json_error(response.status_code, response.json(), 413, "too_large")
    assert f"larger than {MAX_UPLOAD_BYTES} bytes" in response.json()["error"]["message"]
    chunked = requests.post(
        f"{proxied.url}/api/v1/jobs",
        data=(b"x" * 65536 for _ in range(20)),  # no Content-Length: nginx counts as it reads
        headers={**proxied.key.headers, "Content-Type": "multipart/form-data; boundary=b"},
        timeout=30,
    )
    assert_json_error(chunked.status_code, chunked.json(), 413, "too_large")


def test_uploads_pass_through_the_proxy(proxied: Proxied) -> None:
    files = [("image", ("a.png", image_bytes(64, 48, seed=61), "application/octet-stream"))]
    response = requests.post(f"{proxied.url}/api/v1/jobs", files=files, headers=proxied.key.headers, timeout=30)
    assert response.status_code == 202, response.text
    job = requests.get(
        f"{proxied.url}/api/v1/jobs/{response.json()['job_id']}",
        headers=proxied.key.headers,
        timeout=5,
    )
    assert job.status_code == 200 and job.json()["files"][0]["size"] == len(files[0][1][1])


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /healthz?" + b"q" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n", 431, "headers_too_large"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Many: m\r\n" * 3000 + b"\r\n", 431, "headers_too_large"),
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"),
    ],
    ids=["request-line", "one-header", "many-headers", "garbage", "bad-length"],
)
def test_what_nginx_refuses_is_json(proxied: Proxied, request_bytes: bytes, status: int, code: str) -> None:
    answer_status, headers, body = raw_request(proxied, request_bytes)
    assert headers["content-type"] == "application/json", body
    assert_json_error(answer_status, json.loads(body), status, code)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 8])
def test_headers_nginx_passes_on_never_meet_gunicorns_html_errors(proxied: Proxied, count: int) -> None:
    """nginx joins repeated X-Forwarded-For headers into one: gunicorn's per-header limit must hold it."""
    status, headers, body = get_with_headers(proxied, ("X-Forwarded-For: " + "1" * 3900 + "\r\n") * count)
    assert headers["content-type"] == "application/json", body
    assert status in (200, 431)
    for lines in (500, 900, 990):
        status, headers, body = get_with_headers(proxied, "a:\r\n" * lines)
        assert headers["content-type"] == "application/json", body


def test_a_browser_gets_a_page_for_a_page(proxied: Proxied) -> None:
    status, headers, body = get_with_headers(proxied, "Accept: text/html\r\nX-Big: " + "b" * 5000 + "\r\n", path="/")
    assert status == 431 and headers["content-type"] == "text/html"
    assert b"<h1>Error 431</h1>" in body and b"longer than 4,096 bytes" in body
    status, headers, _ = get_with_headers(proxied, "Accept: text/html\r\nX-Big: " + "b" * 5000 + "\r\n", "/api/v1/jobs")
    assert status == 431 and headers["content-type"] == "application/json"


def test_no_gunicorn_behind_the_proxy_is_502_json(services_env: dict[str, str], logs_dir: Path, tmp_path: Path) -> None:
    proxy, url = start_proxy(services_env, f"127.0.0.1:{free_port()}", tmp_path, logs_dir / "nginx-alone.log")
    try:
        response = requests.get(f"{url}/api/v1/jobs", timeout=10)
    finally:
        proxy.stop()
    assert_json_error(response.status_code, response.json(), 502, "api_unavailable")
    assert int(response.headers["Retry-After"]) > 0

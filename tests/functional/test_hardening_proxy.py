"""nginx in front of a real gunicorn (``python -m proxy``), over real sockets.

Slow clients hold nginx connections, never gunicorn threads, so /healthz keeps
answering; what nginx refuses itself (a body over MAX_UPLOAD_BYTES, a request line
or headers too long, garbage, too many requests from one address) is answered with
the API's JSON error, and gunicorn's HTML error pages never get through. A body is
taken only with good credentials: keyless uploads never reach nginx's temp files.
One client's request answered early never costs another a 502.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from harness.images import image_bytes
from harness.processes import ServiceProcess, free_port, start_api, start_proxy
from tests.functional.hardening_support import assert_json_error, children, raw_exchange
from tests.helpers import TestKey

MAX_UPLOAD_BYTES = 3_000_000
# These tests send many requests at once from one address; the limits' own tests set tight ones.
ROOMY_PROXY_LIMITS = {"PROXY_CONNECTIONS_PER_ADDRESS": "100", "PROXY_REQUESTS_PER_SECOND": "1000"}


@dataclass(frozen=True)
class Proxied:
    url: str
    host: str
    port: int
    key: TestKey
    gunicorn: ServiceProcess
    nginx: ServiceProcess
    directory: Path
    env: dict[str, str]
    api_bind: str


@pytest.fixture(scope="module")
def proxied(
    services_env: dict[str, str], logs_dir: Path, tmp_path_factory: pytest.TempPathFactory, api_key: TestKey
) -> Iterator[Proxied]:
    env = {**services_env, "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES), **ROOMY_PROXY_LIMITS}
    server, api_url = start_api(env, logs_dir / "gunicorn-proxied.log")
    directory = tmp_path_factory.mktemp("nginx")
    proxy, url = start_proxy(env, api_url.removeprefix("http://"), directory, logs_dir / "nginx.log")
    try:
        port = int(url.rsplit(":", 1)[1])
        yield Proxied(url, "127.0.0.1", port, api_key, server, proxy, directory, env, api_url.removeprefix("http://"))
    finally:
        proxy.stop()
        server.stop()


def raw_request(proxied: Proxied, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is; return the status, headers (lower-case names) and body of the answer."""
    return raw_exchange(proxied.host, proxied.port, data)


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
    """A read, and an upload, whose key check then finds no app to ask: both 502 with Retry-After, never 500."""
    proxy, url = start_proxy(services_env, f"127.0.0.1:{free_port()}", tmp_path, logs_dir / "nginx-alone.log")
    upload = [("image", ("a.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 1000, "image/png"))]
    key = {"Authorization": f"Bearer yj_0badc0de_{'A' * 43}"}
    try:
        answers = [
            requests.get(f"{url}/api/v1/jobs", timeout=10),
            requests.post(f"{url}/api/v1/jobs", files=upload, headers=key, timeout=10),
        ]
    finally:
        proxy.stop()
    for response in answers:
        assert_json_error(response.status_code, response.json(), 502, "api_unavailable")
        assert int(response.headers["Retry-After"]) > 0


# --- One client's early answer never breaks another's request -------------------------------------


def bad_then_good(proxied: Proxied, bad: dict[str, object]) -> int:
    """Send ``bad`` (answered before its body is read), then a POST of another client; the good one's status."""
    requests.post(f"{proxied.url}/api/v1/jobs", timeout=30, **bad)  # type: ignore[arg-type]
    good = requests.post(f"{proxied.url}/api/v1/jobs/{uuid.uuid4()}/cancel", headers=proxied.key.headers, timeout=30)
    return good.status_code


def test_a_body_the_api_did_not_read_never_gives_the_next_request_a_502(proxied: Proxied) -> None:
    """nginx reuses its keep-alive connection to gunicorn for the next request, and never retries a POST.

    Two kinds of early answer, 100 pairs each: an unknown key with a 2 MB upload (401),
    and the key with a 100 KB JSON body (415).
    """
    unknown_key = {"Authorization": f"Bearer yj_0badc0de_{'A' * 43}"}
    upload = [("image", ("big.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 2_000_000, "image/png"))]
    json_body = {**proxied.key.headers, "Content-Type": "application/json"}
    kinds = {
        "unknown key, 2 MB upload": {"headers": unknown_key, "files": upload},
        "key, 100 KB JSON": {"headers": json_body, "data": b"[" + b"0," * 50_000 + b"0]"},
    }
    statuses = {kind: [bad_then_good(proxied, bad) for _ in range(100)] for kind, bad in kinds.items()}
    print("\n" + "; ".join(f"{kind}: {answers.count(502)} x 502 in 100 pairs" for kind, answers in statuses.items()))
    assert all(set(answers) == {404} for answers in statuses.values()), statuses


# --- Key before body ---------------------------------------------------------------------------------


def answer_before_body(proxied: Proxied, head: str, body_start: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (declaring a larger body) and ``body_start`` only; the answer that comes without the rest."""
    with socket.create_connection((proxied.host, proxied.port), timeout=10) as sock:
        sock.sendall(head.encode() + body_start)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)  # raises socket.timeout while nginx waits for the rest of the body
        head_bytes, _, body = answer.partition(b"\r\n\r\n")
        status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        while len(body) < int(headers.get("content-length", 0)):
            body += sock.recv(65536)
    return int(status_line.split()[1]), headers, body


def upload_head(path: str, length: int, extra: str = "") -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {length}\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("credentials", "sentence"),
    [("", "needs an API key"), (f"Authorization: Bearer yj_0badc0de_{'A' * 43}\r\n", "not valid")],
    ids=["no-key", "unknown-key"],
)
def test_a_keyless_upload_is_refused_before_its_body_is_read(proxied: Proxied, credentials: str, sentence: str) -> None:
    head = upload_head("/api/v1/jobs", 2_500_000, credentials)
    status, headers, body = answer_before_body(proxied, head, b"--b\r\n" + b"\0" * 65536)
    assert_json_error(status, json.loads(body), 401, "unauthorized")
    assert sentence in body.decode()
    assert headers["www-authenticate"].startswith("Bearer")


def test_a_browser_without_a_session_is_sent_to_sign_in_before_its_upload_is_read(proxied: Proxied) -> None:
    head = upload_head("/", 2_500_000, "Accept: text/html\r\n")
    status, headers, _ = answer_before_body(proxied, head, b"--b\r\n" + b"\0" * 65536)
    assert status == 303 and headers["location"].startswith("/sign-in?next=")


def test_a_signed_in_browser_uploads_through_the_proxy(proxied: Proxied) -> None:
    """The key check takes the session cookie for the upload form, as the app does (CSRF token and all)."""
    with requests.Session() as browser:
        form = browser.get(f"{proxied.url}/sign-in", timeout=10).text
        signed_in = browser.post(
            f"{proxied.url}/sign-in",
            data={"key": proxied.key.key, "csrf_token": csrf_token_of(form), "next": "/"},
            allow_redirects=False,
            timeout=10,
        )
        assert signed_in.status_code == 303, signed_in.text
        upload_form = browser.get(f"{proxied.url}/", timeout=10)
        assert upload_form.status_code == 200
        files = [("image", ("a.png", image_bytes(64, 48, seed=62), "image/png"))]
        sent = browser.post(
            f"{proxied.url}/",
            files=files,
            data={"csrf_token": csrf_token_of(upload_form.text)},
            allow_redirects=False,
            timeout=30,
        )
    assert sent.status_code == 303 and sent.headers["Location"].startswith("/jobs/"), sent.text


def test_the_sign_in_form_takes_at_most_64_kib_without_a_key(proxied: Proxied) -> None:
    response = requests.post(f"{proxied.url}/sign-in", data={"key": "k" * 70_000}, timeout=10)
    assert_json_error(response.status_code, response.json(), 413, "too_large")
    assert "larger than 65536 bytes" in response.json()["error"]["message"]


def csrf_token_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def temp_file_bytes(proxied: Proxied) -> int:
    """Bytes in the request-body temp files nginx's workers hold open (nginx unlinks them as it makes them)."""
    temp_dir = str(proxied.directory / "client_body")
    held = 0
    for worker in children(proxied.nginx.pid):
        for fd in Path(f"/proc/{worker}/fd").iterdir():
            try:
                if os.readlink(fd).startswith(temp_dir):
                    held += fd.stat().st_size
            except FileNotFoundError:
                continue  # closed meanwhile
    return held


@pytest.mark.slow
def test_keyless_trickling_uploads_hold_no_temp_file_bytes(proxied: Proxied) -> None:
    """8 keyless clients send 1 MB of a 2.9 MB upload, then a byte a second: nginx holds none of it on disk.

    One client with the key, sending the same, shows what an accepted upload holds meanwhile.
    """
    stop = threading.Event()
    unknown_key = f"Authorization: Bearer yj_0badc0de_{'A' * 43}\r\n"
    keyless = [upload_head("/api/v1/jobs", 2_900_000), upload_head("/api/v1/jobs", 2_900_000, unknown_key)]
    sent_first = b"--b\r\n" + b"\0" * 1_000_000
    clients = [SlowClient(proxied, keyless[i % 2].encode() + sent_first, b"\0" * 100, stop) for i in range(8)]
    try:
        for client in clients:
            client.start()
        time.sleep(3)
        keyless_bytes = temp_file_bytes(proxied)
        keyed = SlowClient(
            proxied,
            upload_head("/api/v1/jobs", 2_900_000, f"Authorization: Bearer {proxied.key.key}\r\n").encode()
            + sent_first,
            b"\0" * 100,
            stop,
        )
        keyed.start()
        time.sleep(3)
        with_keyed_bytes = temp_file_bytes(proxied)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=5)
    print(f"\nnginx temp files: {keyless_bytes} bytes for 8 keyless uploads; {with_keyed_bytes} with one keyed")
    assert keyless_bytes == 0
    assert with_keyed_bytes >= 500_000, "the measure sees an accepted upload's bytes"


# --- Per-address limits --------------------------------------------------------------------------------


@pytest.fixture()
def tight_proxy(proxied: Proxied, logs_dir: Path, tmp_path: Path) -> Iterator[str]:
    """Another nginx in front of the same gunicorn: 2 requests at once and 5 a second (burst 10) per address."""
    env = {**proxied.env, "PROXY_CONNECTIONS_PER_ADDRESS": "2", "PROXY_REQUESTS_PER_SECOND": "5"}
    process, url = start_proxy(env, proxied.api_bind, tmp_path, logs_dir / "nginx-tight.log")
    time.sleep(2)  # the rate start_proxy's own probes used is paid back
    yield url
    process.stop()


def test_a_burst_over_the_rate_is_429_json_with_retry_after(tight_proxy: str) -> None:
    statuses = []
    started = time.monotonic()
    for _ in range(30):
        response = requests.get(f"{tight_proxy}/healthz", timeout=5)
        statuses.append(response.status_code)
        if response.status_code == 429:
            refused = response
    seconds = time.monotonic() - started
    print(f"\n30 requests in {seconds:.2f} s: {statuses.count(200)} x 200, {statuses.count(429)} x 429")
    assert 10 <= statuses.count(200) <= 11 + 5 * seconds  # the burst, and the rate meanwhile
    assert statuses.count(429) > 0
    assert_json_error(refused.status_code, refused.json(), 429, "too_many_requests")
    assert int(refused.headers["Retry-After"]) >= 1
    time.sleep(1.5)
    assert requests.get(f"{tight_proxy}/healthz", timeout=5).status_code == 200


def test_requests_in_progress_per_address_are_limited(tight_proxy: str, proxied: Proxied) -> None:
    stop = threading.Event()
    target = dataclasses.replace(proxied, url=tight_proxy, port=int(tight_proxy.rsplit(":", 1)[1]))
    head = upload_head("/api/v1/jobs", 900_000, f"Authorization: Bearer {proxied.key.key}\r\n")
    uploads = [SlowClient(target, head.encode(), b"\0" * 100, stop) for _ in range(2)]
    try:
        for upload in uploads:
            upload.start()
        time.sleep(1.5)
        third = requests.get(f"{tight_proxy}/healthz", timeout=5)
    finally:
        stop.set()
        for upload in uploads:
            upload.join(timeout=5)
    assert_json_error(third.status_code, third.json(), 429, "too_many_requests")
    assert third.headers["Retry-After"] == "1"
    time.sleep(1)
    assert requests.get(f"{tight_proxy}/healthz", timeout=5).status_code == 200

"""Resumable uploads (tus 1.0) with the real client, tuspy, through the real nginx and gunicorn.

A file sent in pieces becomes a stored file whose SHA-256 is the source's, and the same
bytes again are the same file; a client killed (SIGKILL, its process group) halfway
resumes from its URL storage and sends only the rest. Every refusal is the protocol's
answer, with nothing kept that should not be: a wrong offset, type, checksum or version,
another tenant's upload, a second writer at once, a full volume (then resumed), too many
unfinished bytes, bytes that are neither an image nor a video (the upload goes with them).
Unfinished uploads expire: the worker's sweep removes row and part. The files sent are
images by their header with any bytes behind it (``padded_image``): what is tested is how
bytes travel.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import pytest
import requests
from celery import Celery
from sqlalchemy import func, select, update
from tusclient import client as tus_client
from tusclient.storage.filestorage import FileStorage
from werkzeug.test import TestResponse

import celery_config
from config import Settings
from harness.processes import ServiceProcess, start_api, start_proxy, wait_until
from jobs.messages import SWEEP_UPLOADS_TASK
from resumable.locks import upload_lock
from storage import Storage
from storage.parts import part_relpath
from storage.tables import ResumableUpload, StoredFile
from tests.conftest import MakeApp, open_storage
from tests.functional.hardening_support import assert_json_error
from tests.functional.test_hardening_proxy import ROOMY_PROXY_LIMITS, csrf_token_of
from tests.helpers import TestKey, add_key
from tests.unit.storage.test_media import padded_image

MiB = 1024 * 1024
MAX_FILE_BYTES = 16 * MiB
PENDING_BYTES = 24 * MiB
# The limit on every other request body (a multipart job): a piece of an upload is not held to it.
MAX_UPLOAD_BYTES = 1_000_000
CHUNK = 256 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
PIECE = {**TUS, "Content-Type": "application/offset+octet-stream"}


@dataclass(frozen=True)
class Stack:
    url: str
    env: dict[str, str]
    gunicorn: ServiceProcess
    storage: Storage

    @property
    def uploads(self) -> str:
        return f"{self.url}/api/v1/uploads"


def start_stack(
    env: dict[str, str], directory: Path, logs: Path, name: str
) -> tuple[ServiceProcess, ServiceProcess, str]:
    """gunicorn (2 processes, so pieces of one upload land on either) behind ``python -m proxy``."""
    server, api_url = start_api(env, logs / f"gunicorn-{name}.log")
    try:
        proxy, url = start_proxy(env, api_url.removeprefix("http://"), directory, logs / f"nginx-{name}.log")
    except BaseException:
        server.stop()
        raise
    return server, proxy, url


@pytest.fixture(scope="module")
def stack(services_env: dict[str, str], logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        **services_env,
        **ROOMY_PROXY_LIMITS,
        "MAX_FILE_BYTES": str(MAX_FILE_BYTES),
        "QUOTA_PENDING_UPLOAD_BYTES": str(PENDING_BYTES),
        "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    }
    server, proxy, url = start_stack(env, tmp_path_factory.mktemp("nginx-tus"), logs_dir, "tus")
    storage = open_storage(env)
    try:
        yield Stack(url, env, server, storage)
    finally:
        storage.dispose()
        proxy.stop()
        server.stop()
    assert "Traceback" not in server.log_text()


def new_key(stack: Stack, tenant: str | None = None) -> TestKey:
    """A key of a tenant of this test's own, so no two tests share its unfinished uploads."""
    return add_key(stack.storage, tenant or f"tus-{uuid.uuid4().hex[:8]}")


def source_file(directory: Path, size: int, seed: int) -> tuple[Path, str]:
    """A file of ``size`` bytes (:func:`padded_image`), and its SHA-256."""
    data = padded_image(size, seed)
    path = directory / f"source-{seed}.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


class KeptOpen(io.BufferedReader):
    """A file for tuspy, which closes the stream it fingerprints (``with stream:``) and, given a path instead,
    opens the file anew for each piece and never closes it: closed by the test (:func:`opened`)."""

    def close(self) -> None:
        """Left open: the test closes it."""


@pytest.fixture()
def opened() -> Iterator[Callable[[Path], BinaryIO]]:
    with contextlib.ExitStack() as files:

        def open_file(path: Path) -> BinaryIO:
            handle = KeptOpen(io.FileIO(path, "rb"))
            files.callback(io.BufferedReader.close, handle)
            return handle

        yield open_file


def tus(stack: Stack, key: TestKey) -> tus_client.TusClient:
    return tus_client.TusClient(stack.uploads, headers=key.headers)


def head(url: str, key: TestKey) -> requests.Response:
    return requests.head(url, headers={**TUS, **key.headers}, timeout=10)


def create(stack: Stack, key: TestKey, length: int, **headers: str) -> requests.Response:
    return requests.post(
        stack.uploads, headers={**TUS, **key.headers, "Upload-Length": str(length), **headers}, timeout=10
    )


def patch(url: str, key: TestKey, offset: int, data: bytes, **headers: str) -> requests.Response:
    return requests.patch(
        url, data=data, headers={**PIECE, **key.headers, "Upload-Offset": str(offset), **headers}, timeout=30
    )


def created_url(stack: Stack, key: TestKey, length: int) -> str:
    response = create(stack, key, length)
    assert response.status_code == 201, response.text
    return f"{stack.url}{response.headers['Location']}"


def upload_id_of(url: str) -> uuid.UUID:
    return uuid.UUID(url.rsplit("/", 1)[1])


def writing(stack: Stack, upload_id: uuid.UUID) -> bool:
    """Whether a request holds the upload's writer lock now (probed by trying to take it)."""
    with upload_lock(stack.storage.database.engine, upload_id) as held:
        return not held


def upload_json(url: str, key: TestKey) -> dict[str, object]:
    response = requests.get(url, headers=key.headers, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


# --- Whole uploads ----------------------------------------------------------------------------------


def test_discovery_names_the_protocol_and_its_extensions(stack: Stack) -> None:
    response = requests.options(stack.uploads, timeout=10)  # public: no key
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0" and response.headers["Tus-Resumable"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) == {"creation", "expiration", "termination", "checksum"}
    assert int(response.headers["Tus-Max-Size"]) == MAX_FILE_BYTES
    assert set(response.headers["Tus-Checksum-Algorithm"].split(",")) == {"md5", "sha1", "sha256"}


def test_tuspy_uploads_a_file_in_pieces_and_the_same_bytes_are_the_same_file(
    stack: Stack, tmp_path: Path, opened: Callable[[Path], BinaryIO]
) -> None:
    key = new_key(stack)
    path, digest = source_file(tmp_path, 3 * MiB + 12345, seed=1)
    uploader = tus(stack, key).uploader(file_stream=opened(path), chunk_size=CHUNK, metadata={"filename": "scan.bin"})
    uploader.upload()
    assert uploader.url is not None

    finished = head(uploader.url, key)
    assert finished.status_code == 200 and finished.headers["Cache-Control"] == "no-store"
    assert finished.headers["Upload-Offset"] == finished.headers["Upload-Length"] == str(path.stat().st_size)
    assert "Upload-Expires" not in finished.headers
    info = upload_json(uploader.url, key)
    assert info["sha256"] == digest and info["size"] == path.stat().st_size and info["offset"] == info["length"]
    assert info["file_id"] == finished.headers["File-Id"] and info["filename"] == "scan.bin"
    assert info["finished_at"] is not None and info["expires_at"] is None
    assert not (stack.storage.blobs.root / part_relpath(upload_id_of(uploader.url))).exists()

    # Checksummed pieces (sha1, tuspy's) of the same bytes: the same stored file.
    again = tus(stack, key).uploader(file_stream=opened(path), chunk_size=CHUNK, upload_checksum=True)
    again.upload()
    assert head(again.url, key).headers["File-Id"] == info["file_id"]
    with stack.storage.blobs.open(f"blobs/{digest[:2]}/{digest[2:4]}/{digest}") as blob:
        assert hashlib.file_digest(blob, "sha256").hexdigest() == digest


def test_an_empty_file_is_refused_at_its_creation_and_nothing_is_kept(stack: Stack) -> None:
    key = new_key(stack)
    response = create(stack, key, 0)
    assert_json_error(response.status_code, response.json(), 415, "unsupported_media")
    assert "Location" not in response.headers
    with stack.storage.database.transaction() as session:
        kept = select(func.count()).select_from(ResumableUpload).where(ResumableUpload.tenant_id == key.tenant_id)
        assert session.scalar(kept) == 0


CHILD = textwrap.dedent(
    """
    import sys, time
    from tusclient import client
    from tusclient.storage.filestorage import FileStorage

    url, key, path, store = sys.argv[1:5]
    uploader = client.TusClient(url, headers={"Authorization": f"Bearer {key}"}).uploader(
        path, chunk_size=int(sys.argv[5]), store_url=True, url_storage=FileStorage(store)
    )
    uploader.upload_chunk()
    while True:
        print(uploader.offset, flush=True)
        time.sleep(0.05)
        uploader.upload_chunk()
    """
)


def test_a_client_killed_halfway_resumes_and_sends_only_the_rest(
    stack: Stack, tmp_path: Path, opened: Callable[[Path], BinaryIO]
) -> None:
    key = new_key(stack)
    size = 6 * MiB
    path, digest = source_file(tmp_path, size, seed=2)
    store = tmp_path / "tus-urls.json"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, stack.uploads, key.key, str(path), str(store), str(CHUNK)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            if int(line) >= size // 2:
                break
        os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == -signal.SIGKILL

    urls = FileStorage(str(store))
    with contextlib.closing(urls._db):  # the TinyDB file tuspy's FileStorage keeps open
        resumed = tus(stack, key).uploader(file_stream=opened(path), chunk_size=CHUNK, store_url=True, url_storage=urls)
    kept = int(head(resumed.url, key).headers["Upload-Offset"])
    assert resumed.offset == kept and size // 2 <= kept < size, (kept, size)
    sent = 0
    while resumed.offset < size:
        sent += resumed.get_request_length()
        resumed.upload_chunk()
    assert sent == size - kept, "only the rest was sent"
    assert upload_json(resumed.url, key)["sha256"] == digest


def test_a_signed_in_browser_uploads_with_the_pages_csrf_token(stack: Stack) -> None:
    """The web form's tus-js-client sends the session cookie and the page's token; nginx's key check (which
    sees no body) and the app both take it, and nothing less."""
    key = new_key(stack)
    with requests.Session() as browser:
        form = browser.get(f"{stack.url}/sign-in", timeout=10).text
        signed_in = browser.post(
            f"{stack.url}/sign-in",
            data={"key": key.key, "csrf_token": csrf_token_of(form), "next": "/"},
            allow_redirects=False,
            timeout=10,
        )
        assert signed_in.status_code == 303, signed_in.text
        token = csrf_token_of(browser.get(f"{stack.url}/", timeout=10).text)
        data = padded_image(300, seed=5)
        creation = {**TUS, "Upload-Length": str(len(data))}
        for refused in ({}, {"X-CSRFToken": "not-the-token"}):
            response = browser.post(stack.uploads, headers={**creation, **refused}, timeout=10)
            assert_json_error(response.status_code, response.json(), 401, "unauthorized")
        created = browser.post(stack.uploads, headers={**creation, "X-CSRFToken": token}, timeout=10)
        assert created.status_code == 201, created.text
        url = f"{stack.url}{created.headers['Location']}"
        piece = {**PIECE, "Upload-Offset": "0"}
        assert browser.patch(url, data=data, headers=piece, timeout=10).status_code == 401
        sent = browser.patch(url, data=data, headers={**piece, "X-CSRFToken": token}, timeout=10)
        assert sent.status_code == 204 and sent.headers["File-Id"], sent.text
    assert upload_json(url, key)["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_piece_streams_through_the_proxy_past_the_limit_on_other_bodies(stack: Stack, tmp_path: Path) -> None:
    """nginx passes a piece on as it arrives, with no body limit of its own (its key check included); a job's
    multipart body is still held to MAX_UPLOAD_BYTES."""
    key = new_key(stack)
    path, digest = source_file(tmp_path, 3 * MAX_UPLOAD_BYTES, seed=4)
    url = created_url(stack, key, path.stat().st_size)
    with open(path, "rb") as piece:  # streamed with its Content-Length
        sent = requests.patch(url, data=piece, headers={**PIECE, **key.headers, "Upload-Offset": "0"}, timeout=60)
    assert sent.status_code == 204 and sent.headers["File-Id"], sent.text
    assert upload_json(url, key)["sha256"] == digest
    files = [("image", ("big.bin", path.read_bytes(), "application/octet-stream"))]
    job = requests.post(f"{stack.url}/api/v1/jobs", files=files, headers=key.headers, timeout=30)
    assert_json_error(job.status_code, job.json(), 413, "too_large")


# --- Refusals -----------------------------------------------------------------------------------------


def test_an_upload_over_max_file_bytes_is_413(stack: Stack) -> None:
    response = create(stack, new_key(stack), MAX_FILE_BYTES + 1)
    assert_json_error(response.status_code, response.json(), 413, "too_large")
    assert response.headers["Tus-Resumable"] == "1.0.0"


def test_a_missing_or_unknown_tus_version_is_412_with_the_versions_spoken(stack: Stack) -> None:
    key = new_key(stack)
    for version in (None, "0.2.2"):
        headers = {**key.headers, "Upload-Length": "10", **({"Tus-Resumable": version} if version else {})}
        response = requests.post(stack.uploads, headers=headers, timeout=10)
        assert_json_error(response.status_code, response.json(), 412, "unsupported_version")
        assert response.headers["Tus-Version"] == "1.0.0"


def test_a_creation_without_a_length_is_400(stack: Stack) -> None:
    key = new_key(stack)
    response = requests.post(stack.uploads, headers={**TUS, **key.headers}, timeout=10)
    assert_json_error(response.status_code, response.json(), 400, "invalid_parameter")


def test_wrong_offset_type_and_checksum_keep_nothing(stack: Stack) -> None:
    key = new_key(stack)
    data = padded_image(100_000, seed=6)
    url = created_url(stack, key, len(data))
    assert patch(url, key, 0, data[:40_000]).status_code == 204

    wrong_offset = patch(url, key, 10, data[10:20])
    assert_json_error(wrong_offset.status_code, wrong_offset.json(), 409, "offset_mismatch")
    wrong_type = patch(url, key, 40_000, data[40_000:], **{"Content-Type": "application/octet-stream"})
    assert_json_error(wrong_type.status_code, wrong_type.json(), 415, "unsupported_media_type")
    bad_sum = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    mismatch = patch(url, key, 40_000, data[40_000:], **{"Upload-Checksum": f"sha256 {bad_sum}"})
    assert mismatch.status_code == 460 and mismatch.json()["error"]["code"] == "checksum_mismatch"
    too_long = patch(url, key, 40_000, data[40_000:] + b"extra")
    assert_json_error(too_long.status_code, too_long.json(), 409, "exceeds_length")
    assert head(url, key).headers["Upload-Offset"] == "40000"

    good_sum = base64.b64encode(hashlib.md5(data[40_000:]).digest()).decode()
    done = patch(url, key, 40_000, data[40_000:], **{"Upload-Checksum": f"md5 {good_sum}"})
    assert done.status_code == 204 and done.headers["Upload-Offset"] == str(len(data))
    assert upload_json(url, key)["sha256"] == hashlib.sha256(data).hexdigest()


def test_bytes_neither_image_nor_video_are_refused_at_the_last_piece_and_the_upload_goes(stack: Stack) -> None:
    key = new_key(stack)
    data = b"just some text, sent in two pieces\n" * 3000
    url = created_url(stack, key, len(data))
    assert patch(url, key, 0, data[:50_000]).status_code == 204
    last = patch(url, key, 50_000, data[50_000:])
    assert_json_error(last.status_code, last.json(), 415, "unsupported_media")
    assert "nor a video FFmpeg decodes" in last.json()["error"]["message"]
    assert head(url, key).status_code == 404
    assert not (stack.storage.blobs.root / part_relpath(upload_id_of(url))).exists()
    with stack.storage.database.transaction() as session:
        stored = select(StoredFile.id).where(StoredFile.sha256 == hashlib.sha256(data).hexdigest())
        assert session.scalar(stored) is None


def test_another_tenants_upload_is_404_to_every_method(stack: Stack) -> None:
    owner, other = new_key(stack), new_key(stack)
    url = created_url(stack, owner, 10)
    answers = [
        head(url, other).status_code,
        requests.get(url, headers=other.headers, timeout=10).status_code,
        patch(url, other, 0, b"0123456789").status_code,
        requests.delete(url, headers={**TUS, **other.headers}, timeout=10).status_code,
    ]
    assert answers == [404, 404, 404, 404]
    assert head(url, owner).headers["Upload-Offset"] == "0"


def test_termination_removes_the_upload_and_its_part(stack: Stack) -> None:
    key = new_key(stack)
    url = created_url(stack, key, 1000)
    assert patch(url, key, 0, b"x" * 100).status_code == 204
    part = stack.storage.blobs.root / part_relpath(upload_id_of(url))
    assert part.stat().st_size == 100
    assert requests.delete(url, headers={**TUS, **key.headers}, timeout=10).status_code == 204
    assert head(url, key).status_code == 404 and not part.exists()


def test_a_second_writer_at_once_is_423_and_no_byte_is_lost(stack: Stack) -> None:
    """A piece stays open (half its body sent) while another PATCH comes: that one is refused, having written
    nothing; the first completes with every byte."""
    key = new_key(stack)
    data = padded_image(200_000, seed=7)
    url = created_url(stack, key, len(data))
    host, port = stack.url.removeprefix("http://").split(":")
    path = url.removeprefix(stack.url)
    head_lines = (
        f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key.key}\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=30) as first:
        first.sendall(head_lines.encode() + data[:100_000])

        wait_until(lambda: writing(stack, upload_id_of(url)), 10, what="the first piece holding the upload")
        second = patch(url, key, 0, data)
        assert_json_error(second.status_code, second.json(), 423, "upload_busy")
        assert second.json()["error"]["code"] == "upload_busy" and int(second.headers["Retry-After"]) > 0
        first.sendall(data[100_000:])
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += first.recv(65536)
    assert answer.startswith(b"HTTP/1.1 204"), answer
    assert upload_json(url, key)["sha256"] == hashlib.sha256(data).hexdigest()


def test_unfinished_bytes_past_the_tenants_allowance_are_507(stack: Stack) -> None:
    key = new_key(stack)
    first = created_url(stack, key, MAX_FILE_BYTES)
    refused = create(stack, key, PENDING_BYTES - MAX_FILE_BYTES + 1)
    assert_json_error(refused.status_code, refused.json(), 507, "pending_uploads_quota_exceeded")
    assert create(stack, key, PENDING_BYTES - MAX_FILE_BYTES).status_code == 201  # exactly the allowance
    assert requests.delete(first, headers={**TUS, **key.headers}, timeout=10).status_code == 204
    assert create(stack, key, MAX_FILE_BYTES).status_code == 201  # room again


def test_a_full_volume_is_507_and_the_upload_resumes_once_there_is_room(
    stack: Stack, tmpfs_volume: Path, logs_dir: Path, tmp_path: Path
) -> None:
    """The storage volume is a 1 MiB tmpfs, filled up for real while a piece is written to it."""
    env = {**stack.env, "STORAGE_ROOT": str(tmpfs_volume)}
    server, proxy, url = start_stack(env, tmp_path / "nginx", logs_dir, "tus-full")
    key = new_key(stack)
    data = padded_image(600_000, seed=8)
    try:
        full_stack = Stack(url, env, server, stack.storage)
        upload = created_url(full_stack, key, len(data))
        assert patch(upload, key, 0, data[:100_000]).status_code == 204
        filler = tmpfs_volume / "filler"
        with open(filler, "wb") as handle:
            handle.write(b"\0" * 700_000)  # leaves well under the 500,000 bytes the upload lacks
        full = patch(upload, key, 100_000, data[100_000:])
        assert_json_error(full.status_code, full.json(), 507, "insufficient_storage")
        assert head(upload, key).headers["Upload-Offset"] == "100000"

        filler.unlink()
        offset = int(head(upload, key).headers["Upload-Offset"])
        done = patch(upload, key, offset, data[offset:])
        assert done.status_code == 204 and done.headers["File-Id"]
        assert upload_json(upload, key)["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        proxy.stop()
        server.stop()
    assert "Traceback" not in server.log_text()


# --- Expiry --------------------------------------------------------------------------------------------


def test_the_sweep_task_removes_expired_uploads_and_stray_parts(stack: Stack, worker: ServiceProcess) -> None:
    key = new_key(stack)
    expired = created_url(stack, key, 1000)
    live = created_url(stack, key, 1000)
    assert patch(expired, key, 0, b"y" * 300).status_code == 204
    assert "Upload-Expires" in head(live, key).headers
    expired_id = upload_id_of(expired)
    with stack.storage.database.transaction() as session:
        session.execute(
            update(ResumableUpload)
            .where(ResumableUpload.id == expired_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    stray = stack.storage.blobs.root / part_relpath(uuid.uuid4())
    stray.write_bytes(b"left by a creation that never committed")
    two_hours_ago = time.time() - 7200
    os.utime(stray, (two_hours_ago, two_hours_ago))

    settings = Settings.from_env(stack.env)
    celery = Celery(set_as_current=False)
    celery.config_from_object(celery_config.from_settings(settings))
    try:
        swept = celery.send_task(SWEEP_UPLOADS_TASK).get(timeout=60)  # as beat does
    finally:
        celery.close()
    assert swept["expired"] >= 1 and swept["stray_parts"] >= 1, swept
    assert head(expired, key).status_code == 404
    assert not (stack.storage.blobs.root / part_relpath(expired_id)).exists() and not stray.exists()
    assert head(live, key).headers["Upload-Offset"] == "0", "an upload that has not expired stays"
    line = f"upload expired id={expired_id} tenant={key.tenant_id} received=300"
    wait_until(lambda: line in worker.log_text(), 10, what="the expiry logged")


def test_unfinished_uploads_past_the_tenants_count_are_429(make_app: MakeApp, services_env: dict[str, str]) -> None:
    client = make_app({**services_env, "QUOTA_PENDING_UPLOADS": "2"}).test_client()

    def create_one() -> TestResponse:
        return client.post("/api/v1/uploads", headers={**TUS, "Upload-Length": "10"})

    first, second = create_one(), create_one()
    assert first.status_code == second.status_code == 201
    refused = create_one()
    assert_json_error(refused.status_code, refused.get_json(), 429, "too_many_pending_uploads")
    assert client.delete(first.headers["Location"], headers=TUS).status_code == 204
    assert create_one().status_code == 201, "a terminated upload makes room"

"""The hardening defects found under attack, each against the real thing.

A full storage volume (a real tmpfs) behind a real gunicorn, form fields over the
in-memory limit, and job ids in any spelling but the canonical one. The memory
checks live in ``test_hardening_memory.py``, the proxy's in ``test_hardening_proxy.py``.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from config import Settings
from harness.images import image_bytes
from harness.processes import start_api
from jobs.retention import RetentionPolicy
from storage import Storage
from storage.maintenance.retention import run_cleanup
from tests.conftest import MakeApp
from tests.functional.hardening_support import (
    assert_json_error,
    noise_png,
)
from tests.helpers import TestKey, complete_job, post_images


@pytest.fixture()
def keyed(make_app: MakeApp, isolated_env: dict[str, str]) -> FlaskClient:
    """An in-process client (it sends a key of its own), whose jobs no worker takes."""
    return make_app(isolated_env).test_client()


# --- Disk 100 % full ---------------------------------------------------------------------


@pytest.fixture()
def full_volume(tmpfs_volume: Path) -> Path:
    """The tiny tmpfs, filled to the last byte, as the storage volume."""
    (tmpfs_volume / "tmp").mkdir()
    with open(tmpfs_volume / "filler", "wb") as filler, pytest.raises(OSError, match="No space left"):
        while True:
            filler.write(b"\0" * 65536)
            filler.flush()
    return tmpfs_volume


def test_full_disk_answers_every_upload_507_and_leaves_nothing(
    services_env: dict[str, str], logs_dir: Path, full_volume: Path, api_key: TestKey
) -> None:
    server, api_url = start_api({**services_env, "STORAGE_ROOT": str(full_volume)}, logs_dir / "gunicorn-full.log")
    # Small files fail only when their buffered bytes are flushed (and again at close); large ones while streaming.
    uploads = [image_bytes(64, 48, seed=41), noise_png(300, 300), image_bytes(32, 32, seed=42), noise_png(200, 400)]

    def post(data: bytes) -> tuple[int, object, str | None]:
        files = [("image", ("full.png", data, "application/octet-stream"))]
        response = requests.post(f"{api_url}/api/v1/jobs", files=files, headers=api_key.headers, timeout=30)
        return response.status_code, response.json(), response.headers.get("Retry-After")

    try:
        with ThreadPoolExecutor(len(uploads)) as pool:
            answers = list(pool.map(post, uploads))
        temp_files = sorted(p.name for p in (full_volume / "tmp").iterdir())
        ready = requests.get(f"{api_url}/readyz", timeout=10)
        after_probe = sorted(p.name for p in (full_volume / "tmp").iterdir())
    finally:
        server.stop()
    print(f"\nfull disk: {[status for status, _, _ in answers]}, tmp/ after the uploads {temp_files}")
    for status, body, retry_after in answers:
        assert_json_error(status, body, 507, "insufficient_storage")
        assert retry_after is not None and int(retry_after) > 0
    assert temp_files == [], "a request left its temp file behind"
    assert ready.status_code == 503 and ready.json()["checks"]["storage"] is False
    assert after_probe == [], "the readiness probe left its file behind"
    assert "Traceback" not in server.log_text()


def test_cleanup_removes_leftover_probe_and_upload_files(services_env: dict[str, str], tmp_path: Path) -> None:
    settings = Settings.from_env({**services_env, "STORAGE_ROOT": str(tmp_path)})
    storage = Storage(settings.database_url, tmp_path)
    try:
        tmp = storage.blobs.tmp_dir
        tmp.mkdir(parents=True)
        two_hours_ago = time.time() - 7200
        for name in ("probe-0123456789abcdef", "upload-0123456789abcdef.part"):
            (tmp / name).write_bytes(b"")
            os.utime(tmp / name, (two_hours_ago, two_hours_ago))
        fresh = tmp / "probe-fedcba9876543210"  # a probe running right now
        fresh.write_bytes(b"")
        report = run_cleanup(storage, RetentionPolicy(settings.retention.days))
    finally:
        storage.dispose()
    assert report.status == "done"
    assert sorted(p.name for p in tmp.iterdir()) == [fresh.name]
    assert report.temp_files_removed == 2


# --- Form fields over MAX_FORM_MEMORY_SIZE -------------------------------------------------


def test_a_400_kb_form_field_is_413_json(client: FlaskClient, services_env: dict[str, str]) -> None:
    assert client.application.config["MAX_FORM_MEMORY_SIZE"] == 80 * 1024
    response = post_images(client, ("a.png", image_bytes(seed=43)), model="x" * 400_000)
    assert_json_error(response.status_code, response.get_json(), 413, "too_large")
    assert "form field" in response.get_json()["error"]["message"]
    assert list((Path(services_env["STORAGE_ROOT"]) / "tmp").iterdir()) == []
    small = post_images(client, ("a.png", image_bytes(seed=43)), model="x" * 60_000)
    assert_json_error(small.status_code, small.get_json(), 400, "unknown_model")


def test_files_of_any_size_and_long_names_still_upload(client: FlaskClient) -> None:
    """Werkzeug applies the form-memory limit to its 64 KiB reads too, file parts included."""
    long_name = "ü" * 250 + ".png"
    for side in (150, 400, 700, 1000):  # incompressible PNGs of about 66 kB, 0.5, 1.5 and 3 MB
        files = [(long_name, noise_png(side, side)), (f"{side}.png", noise_png(side, side - 1))]
        response = post_images(client, *files, model="default", conf="0.3")
        assert response.status_code == 202, response.get_data(as_text=True)


def test_a_body_over_max_upload_bytes_is_413_naming_the_limit(make_app: MakeApp) -> None:
    client = make_app(MAX_UPLOAD_BYTES="20000").test_client()
    response = post_images(client, ("big.png", noise_png(200, 200)))
    assert_json_error(response.status_code, response.get_json(), 413, "too_large")
    assert "20000 bytes" in response.get_json()["error"]["message"]


# --- Job ids in one canonical form ------------------------------------------------------------


def spellings(canonical: str) -> list[str]:
    return [canonical.upper(), f"{{{canonical}}}", canonical.replace("-", ""), f"urn:uuid:{canonical}"]


def test_only_the_canonical_id_is_a_route(keyed: FlaskClient, storage: Storage) -> None:
    created = post_images(keyed, ("a.png", image_bytes(seed=44)))
    assert created.status_code == 202, created.get_data(as_text=True)
    job_id, file_id = created.get_json()["job_id"], created.get_json()["files"][0]["file_id"]
    complete_job(storage, job_id)
    assert job_id == job_id.lower() and created.headers["Location"].endswith(f"/api/v1/jobs/{job_id}")

    def urls(job: str, file: str) -> list[str]:
        return [
            f"/api/v1/jobs/{job}",
            f"/api/v1/files/{file}",
            f"/api/v1/files/{file}/content",
            f"/api/v1/jobs/{job}/files/{file}/annotated",
            f"/jobs/{job}",
        ]

    for url in urls(job_id, file_id):
        with keyed.get(url) as response:
            assert response.status_code == 200, url
    for job, file in zip(spellings(job_id), spellings(file_id), strict=True):
        for url in urls(job, file)[:4]:
            response = keyed.get(url)
            assert_json_error(response.status_code, response.get_json(), 404, "not_found")
        page = keyed.get(urls(job, file)[4])
        assert page.status_code == 404 and page.mimetype == "text/html", job
    letter = next(i for i, char in enumerate(job_id) if char.isalpha())
    one_upper = job_id[:letter] + job_id[letter].upper() + job_id[letter + 1 :]
    assert keyed.get(f"/api/v1/jobs/{one_upper}").status_code == 404

"""Bad input gets a clear 4xx JSON error and leaves no file or row behind; outages give 503."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from accounts.keys import new_key
from harness.images import image_bytes, png_claiming
from harness.processes import free_port
from storage import Storage
from storage.tables import Job, StoredFile
from tests.conftest import MakeApp
from tests.helpers import post_images
from tests.unit.storage.test_media import video_claiming


def assert_error(response: TestResponse, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def counts(storage: Storage) -> tuple[int, int]:
    """How many jobs and stored files there are."""
    with storage.database.transaction() as session:
        jobs = session.scalar(select(func.count()).select_from(Job)) or 0
        files = session.scalar(select(func.count()).select_from(StoredFile)) or 0
    return jobs, files


def leftovers(root: str) -> list[Path]:
    return list(Path(root, "tmp").iterdir())


def test_no_image_is_400(client: FlaskClient) -> None:
    assert_error(client.post("/api/v1/jobs", data={"conf": "0.5"}), 400, "no_image")
    assert_error(client.post("/api/v1/jobs", data={"image": "not a file"}), 400, "no_image")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("conf", "abc"),
        ("conf", "1.5"),
        ("iou", "-0.1"),
        ("conf", "nan"),
        ("imgsz", "12"),
        ("imgsz", "3.5"),
        ("imgsz", "²"),
        ("imgsz", "9" * 5000),  # past int()'s digit limit
    ],
)
def test_bad_parameter_is_400(client: FlaskClient, field: str, value: str) -> None:
    assert_error(post_images(client, ("a.png", image_bytes()), **{field: value}), 400, "invalid_parameter")


def test_a_threshold_too_small_for_the_database_is_zero(client: FlaskClient) -> None:
    """Found by schemathesis: 3.5e-252 made PostgreSQL's REAL column refuse the job with a 500."""
    response = post_images(client, ("a.png", image_bytes(seed=4711)), conf="3.5184033367871584e-252", iou="1e-40")
    assert response.status_code == 202, response.get_data(as_text=True)
    job = client.get(f"/api/v1/jobs/{response.get_json()['job_id']}").get_json()
    assert (job["parameters"]["conf"], job["parameters"]["iou"]) == (0.0, 0.0)


@pytest.mark.parametrize("model", ["nope", "no\x00pe", "x" * 200])
def test_unknown_model_is_400(client: FlaskClient, model: str) -> None:
    assert_error(post_images(client, ("a.png", image_bytes()), model=model), 400, "unknown_model")


@pytest.mark.parametrize(
    ("width", "height", "status"), [(9000, 9000, 202), (13000, 13000, 202), (14000, 14000, 413), (30000, 30000, 413)]
)
def test_pixel_limit_is_decided_from_the_header(client: FlaskClient, width: int, height: int, status: int) -> None:
    response = post_images(client, ("claims.png", png_claiming(width, height)))
    assert response.status_code == status, response.get_data(as_text=True)
    if status == 413:
        assert_error(response, 413, "image_too_large")
        assert "too many pixels (" in response.get_json()["error"]["message"]


def test_a_video_whose_header_declares_frames_over_the_cap_is_413(
    client: FlaskClient, storage: Storage, services_env: dict[str, str]
) -> None:
    before = counts(storage)
    response = post_images(client, ("huge.mkv", video_claiming(16000, 16000)))
    assert_error(response, 413, "image_too_large")
    assert "huge.mkv: the video's frames have too many pixels (16000x16000" in response.get_json()["error"]["message"]
    assert counts(storage) == before
    assert leftovers(services_env["STORAGE_ROOT"]) == []


def test_empty_file_is_400(client: FlaskClient) -> None:
    assert_error(post_images(client, ("a.png", b"")), 400, "empty_file")


@pytest.mark.parametrize(
    "content",
    [
        b"just some text, named like a picture",
        b"GIF89a" + b"\x00" * 64,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 10,  # PNG magic with no header behind it
        b"%PDF-1.7\n" + b"x" * 100,
    ],
)
def test_neither_image_nor_video_is_415_whatever_the_name(
    client: FlaskClient, storage: Storage, services_env: dict[str, str], content: bytes
) -> None:
    before = counts(storage)
    data = {"image": [(io.BytesIO(content), "photo.jpg", "image/jpeg")]}
    response = client.post("/api/v1/jobs", data=data, content_type="multipart/form-data")
    assert_error(response, 415, "unsupported_media")
    assert response.get_json()["error"]["message"].startswith("photo.jpg: ")
    assert counts(storage) == before
    assert leftovers(services_env["STORAGE_ROOT"]) == []


def test_one_bad_file_rejects_the_whole_job(
    client: FlaskClient, storage: Storage, services_env: dict[str, str]
) -> None:
    before = counts(storage)
    assert_error(post_images(client, ("good.png", image_bytes(seed=9)), ("bad.jpg", b"nope")), 415, "unsupported_media")
    assert counts(storage) == before
    assert leftovers(services_env["STORAGE_ROOT"]) == []


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_every_accepted_format_is_sniffed(client: FlaskClient, fmt: str) -> None:
    response = post_images(client, ("no-extension", image_bytes(33, 21, seed=1000 + len(fmt), fmt=fmt)))
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["files"][0]["content_type"] == f"image/{fmt.lower()}"


def test_over_max_upload_bytes_is_413_and_leaves_nothing(
    make_app: MakeApp, services_env: dict[str, str], storage: Storage
) -> None:
    app = make_app(MAX_UPLOAD_BYTES="20000")
    before = counts(storage)
    big = image_bytes(400, 400, seed=3, fmt="BMP")
    assert len(big) > 20000
    assert_error(post_images(app.test_client(), ("big.bmp", big)), 413, "too_large")
    assert counts(storage) == before
    assert leftovers(services_env["STORAGE_ROOT"]) == []


def test_unknown_or_malformed_job_is_404(client: FlaskClient) -> None:
    assert_error(client.get("/api/v1/jobs/00000000-0000-4000-8000-000000000000"), 404, "not_found")
    assert_error(client.get("/api/v1/jobs/not-a-uuid"), 404, "not_found")
    assert_error(client.get("/api/v1/files/00000000-0000-4000-8000-000000000000"), 404, "not_found")
    assert_error(client.get("/api/v1/nothing-here"), 404, "not_found")


def test_broker_down_is_503_with_retry_after_and_no_job(make_app: MakeApp, storage: Storage) -> None:
    app = make_app(CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    before_jobs = counts(storage)[0]
    response = post_images(app.test_client(), ("a.png", image_bytes(seed=31)))
    assert_error(response, 503, "broker_unavailable")
    assert int(response.headers["Retry-After"]) > 0
    assert counts(storage)[0] == before_jobs
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["broker"] is False


def test_database_down_is_503_with_retry_after(make_app: MakeApp, services_env: dict[str, str]) -> None:
    app = make_app(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", tenant=None)
    # No key can be made in a database that is down; checking a well-formed one asks the database, and fails.
    response = post_images(app.test_client(key=new_key()), ("a.png", image_bytes(seed=32)))
    assert_error(response, 503, "database_unavailable")
    assert int(response.headers["Retry-After"]) > 0
    assert leftovers(services_env["STORAGE_ROOT"]) == []
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503 and "database" in ready.get_json()["error"]["message"]


def test_readyz_and_healthz_when_all_is_up(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and all(ready.get_json()["checks"].values())


@pytest.fixture()
def tiny_volume(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs as the storage volume, to fill it up for real."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_full_disk_is_507_and_leaves_nothing(
    make_app: MakeApp, isolated_env: dict[str, str], storage: Storage, tiny_volume: Path
) -> None:
    app = make_app(isolated_env, STORAGE_ROOT=str(tiny_volume))
    before = counts(storage)
    response = post_images(app.test_client(), ("big.bmp", image_bytes(800, 800, seed=5, fmt="BMP")))
    assert_error(response, 507, "insufficient_storage")
    assert int(response.headers["Retry-After"]) > 0
    assert counts(storage) == before
    assert leftovers(str(tiny_volume)) == []
    small = post_images(app.test_client(), ("small.png", image_bytes(20, 20, seed=6)))
    assert small.status_code == 202, "the volume works again once the request's temp file is gone"

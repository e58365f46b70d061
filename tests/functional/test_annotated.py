"""GET /api/v1/jobs/<job_id>/files/<file_id>/annotated: a job's image with its detections drawn by Pillow."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from PIL import Image, ImageChops, ImageColor
from sqlalchemy import func, update
from werkzeug.test import TestResponse

from app.annotate import PALETTE, Box, boxes
from config import Settings
from config.paths import BUNDLED_MODEL
from harness.images import image_bytes
from harness.processes import ServiceProcess
from jobs.lifecycle import FileResult, fail_job
from storage import Storage
from storage.tables import StoredFile, Upload
from tests.conftest import MakeApp
from tests.helpers import complete_job, post_images, post_job, wait_for_job
from training.shapes import render_sample

SQUARE = {"name": "square", "class": 1, "confidence": 0.875, "box": {"x1": 20.0, "y1": 40.0, "x2": 120.0, "y2": 110.0}}


@pytest.fixture()
def quiet_client(make_app: MakeApp, isolated_env: dict[str, str]) -> FlaskClient:
    """A client whose jobs no worker takes: each test writes the results itself."""
    return make_app(isolated_env).test_client()


def upload(client: FlaskClient, name: str, data: bytes) -> tuple[str, str]:
    """Create a job over one file named ``name``; return the job's and the file's ids."""
    response = post_images(client, (name, data))
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    return body["job_id"], body["files"][0]["file_id"]


def record(storage: Storage, job_id: str, detections: list[dict[str, Any]], error: str | None = None) -> None:
    """Finish the job as a worker would, with these detections (or this error) for its one file."""

    def result_of(upload: Upload) -> FileResult:
        return FileResult(upload.id, upload.file.width, upload.file.height, detections, error)

    complete_job(storage, job_id, result_of)


def annotated_url(job_id: str, file_id: str) -> str:
    return f"/api/v1/jobs/{job_id}/files/{file_id}/annotated"


def error_code(response: TestResponse, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]["code"]


def test_boxes_are_drawn_in_their_class_colour_with_a_label(quiet_client: FlaskClient, storage: Storage) -> None:
    data = image_bytes(200, 150, seed=950)
    job_id, file_id = upload(quiet_client, "plain.png", data)
    pending = quiet_client.get(annotated_url(job_id, file_id))
    assert error_code(pending, 409) == "not_ready" and int(pending.headers["Retry-After"]) > 0

    record(storage, job_id, [SQUARE])
    response = quiet_client.get(annotated_url(job_id, file_id))
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["Content-Disposition"] == "inline; filename=plain-annotated.png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "private" in response.headers["Cache-Control"]

    original = Image.open(io.BytesIO(data)).convert("RGB")
    drawn = Image.open(io.BytesIO(response.data)).convert("RGB")
    assert drawn.size == original.size
    colour = ImageColor.getrgb(PALETTE[1])
    for edge in ((20, 75), (119, 75), (70, 40), (70, 109)):
        assert drawn.getpixel(edge) == colour, edge
    assert drawn.getpixel((70, 75)) == original.getpixel((70, 75))
    label_band = [drawn.getpixel((x, y)) for x in range(20, 70) for y in range(22, 40)]
    assert colour in label_band and any(min(pixel) > 200 for pixel in label_band)  # white text on the class colour
    assert ImageChops.difference(drawn.crop((0, 120, 200, 150)), original.crop((0, 120, 200, 150))).getbbox() is None


def test_jpeg_stays_jpeg(quiet_client: FlaskClient, storage: Storage) -> None:
    job_id, file_id = upload(quiet_client, "photo.jpg", image_bytes(160, 120, seed=951, fmt="JPEG"))
    record(storage, job_id, [SQUARE])
    response = quiet_client.get(annotated_url(job_id, file_id))
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(response.data)).size == (160, 120)


def test_unknown_job_or_file_is_404(quiet_client: FlaskClient) -> None:
    job_id, file_id = upload(quiet_client, "a.png", image_bytes(seed=952))
    _other_job, other_file = upload(quiet_client, "b.png", image_bytes(seed=953))
    for url in (
        annotated_url(str(uuid.uuid4()), file_id),
        annotated_url(job_id, other_file),
        annotated_url(job_id, str(uuid.uuid4())),
        annotated_url("not-a-uuid", file_id),
        annotated_url(job_id, "not-a-uuid"),
    ):
        assert error_code(quiet_client.get(url), 404) == "not_found", url


def test_failed_job_without_result_is_409_no_result(quiet_client: FlaskClient, storage: Storage) -> None:
    job_id, file_id = upload(quiet_client, "a.png", image_bytes(seed=954))
    with storage.database.transaction() as session:
        fail_job(session, uuid.UUID(job_id), "model_unavailable", "The model's weights are missing.")
    response = quiet_client.get(annotated_url(job_id, file_id))
    assert error_code(response, 409) == "no_result" and "Retry-After" not in response.headers


def test_undecodable_file_is_422(quiet_client: FlaskClient, storage: Storage) -> None:
    job_id, file_id = upload(quiet_client, "broken.png", image_bytes(seed=955))
    record(storage, job_id, [], error="the file could not be decoded as an image")
    response = quiet_client.get(annotated_url(job_id, file_id))
    assert error_code(response, 422) == "undecodable"
    assert response.get_json()["error"]["message"] == "broken.png: the file could not be decoded as an image."


def test_deleted_bytes_are_410(quiet_client: FlaskClient, storage: Storage) -> None:
    job_id, file_id = upload(quiet_client, "old.png", image_bytes(seed=956))
    record(storage, job_id, [SQUARE])
    with storage.database.transaction() as session:
        session.execute(update(StoredFile).where(StoredFile.id == uuid.UUID(file_id)).values(deleted_at=func.now()))
    assert error_code(quiet_client.get(annotated_url(job_id, file_id)), 410) == "gone"


def test_boxes_of_stored_detections() -> None:
    oriented = {"name": "kite", "class": 12, "confidence": 0.5, "box": {"x1": 5, "y1": 1, "x2": 9, "y2": 4, "x3": 3}}
    classification = {"name": "cat", "class": 0, "confidence": 0.9}
    assert boxes([SQUARE, oriented, classification]) == [
        Box("square", 1, 0.875, 20.0, 40.0, 120.0, 110.0),
        Box("kite", 12, 0.5, 3.0, 1.0, 9.0, 4.0),
    ]
    assert boxes([SQUARE])[0].label == "square 88%" and boxes([oriented])[0].colour == PALETTE[2]


def test_annotated_image_of_a_finished_job(
    api: requests.Session, api_url: str, worker: ServiceProcess, services_env: dict[str, str]
) -> None:
    image, _shapes = render_sample(21, 0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    job_id = post_job(api, api_url, [("shapes.png", buffer.getvalue())]).json()["job_id"]
    job = wait_for_job(api_url, job_id, headers=api.headers)
    assert job["status"] == "succeeded", job
    response = api.get(f"{api_url}{annotated_url(job_id, job['files'][0]['file_id'])}", timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    drawn = Image.open(io.BytesIO(response.content)).convert("RGB")
    assert drawn.size == image.size
    changed = ImageChops.difference(drawn, image.convert("RGB")).getbbox() is not None
    assert changed == bool(job["results"][0]["detections"])
    weights = Settings.from_env(services_env).models["shapes"]
    if weights == str(BUNDLED_MODEL) and BUNDLED_MODEL.is_file():
        assert job["results"][0]["detections"], "the shapes model found nothing in a shapes image"


def test_thumbnails_are_small_jpegs_before_and_after_the_result(quiet_client: FlaskClient, storage: Storage) -> None:
    for name, data, size in [
        ("wide.png", image_bytes(1000, 400, seed=980), (320, 128)),
        ("tall.jpg", image_bytes(300, 3000, seed=981, fmt="JPEG"), (32, 320)),
        ("small.bmp", image_bytes(200, 100, seed=982, fmt="BMP"), (200, 100)),
    ]:
        job_id, file_id = upload(quiet_client, name, data)
        url = f"/api/v1/jobs/{job_id}/files/{file_id}/thumbnail"
        for finished in (False, True):  # a thumbnail needs no result
            if finished:
                record(storage, job_id, [SQUARE])
            response = quiet_client.get(url)
            assert response.status_code == 200 and response.mimetype == "image/jpeg", name
            assert response.cache_control.private and response.cache_control.max_age == 86400
            assert Image.open(io.BytesIO(response.data)).size == size, name


def test_thumbnail_errors_are_json(quiet_client: FlaskClient, storage: Storage) -> None:
    job_id, file_id = upload(quiet_client, "a.png", image_bytes(seed=983))
    other_job, _ = upload(quiet_client, "b.png", image_bytes(seed=984))
    assert error_code(quiet_client.get(f"/api/v1/jobs/{other_job}/files/{file_id}/thumbnail"), 404) == "not_found"
    with storage.database.transaction() as session:
        session.execute(update(StoredFile).where(StoredFile.id == uuid.UUID(file_id)).values(deleted_at=func.now()))
    assert error_code(quiet_client.get(f"/api/v1/jobs/{job_id}/files/{file_id}/thumbnail"), 410) == "gone"

"""GET /api/v1/jobs/<job_id>/annotated: a finished job's images with their boxes drawn, as a zip made while sent."""

from __future__ import annotations

import csv
import io
import os
import tempfile
import tracemalloc
import uuid
import zipfile

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image, ImageColor
from werkzeug.test import TestResponse

from app.annotate import PALETTE
from app.api import annotated
from harness.images import image_bytes
from jobs.lifecycle import FileResult
from storage import Storage
from storage.tables import Upload
from tests.conftest import MakeApp
from tests.functional.job_page_support import begin, cancel, land, shapes_job
from tests.helpers import complete_job, key_of, post_images

SQUARE = {"name": "square", "class": 1, "confidence": 0.875, "box": {"x1": 20.0, "y1": 40.0, "x2": 120.0, "y2": 110.0}}


@pytest.fixture()
def quiet_app(make_app: MakeApp, isolated_env: dict[str, str]) -> Flask:
    """An app whose jobs no worker takes: each test writes the results itself."""
    return make_app(isolated_env)


def submitted(client: FlaskClient, *files: tuple[str, bytes]) -> str:
    response = post_images(client, *files)
    assert response.status_code == 202, response.get_data(as_text=True)
    job_id: str = response.get_json()["job_id"]
    return job_id


def zip_of(response: TestResponse) -> zipfile.ZipFile:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/zip"
    return zipfile.ZipFile(io.BytesIO(response.get_data()))


def manifest(archive: zipfile.ZipFile) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(archive.read("files.csv").decode())))


def error_code(response: TestResponse, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    code: str = response.get_json()["error"]["code"]
    return code


def test_every_analysed_image_drawn_and_every_file_listed(quiet_app: Flask, storage: Storage) -> None:
    client = quiet_app.test_client()
    files = [
        ("a.png", image_bytes(200, 150, seed=1)),
        ("a.PNG", image_bytes(200, 150, seed=2)),  # the same name but for case: a zip entry of its own
        ("photo.jpg", image_bytes(160, 120, seed=3, fmt="JPEG")),
        ("broken.png", image_bytes(64, 48, seed=4)),
    ]
    job_id = submitted(client, *files)
    url = f"/api/v1/jobs/{job_id}/annotated"
    running = client.get(url)
    assert error_code(running, 409) == "not_finished" and int(running.headers["Retry-After"]) > 0

    def result_of(upload: Upload) -> FileResult:
        error = "the file could not be decoded as an image" if upload.filename == "broken.png" else None
        return FileResult(upload.id, upload.file.width, upload.file.height, [] if error else [SQUARE], error)

    complete_job(storage, job_id, result_of)
    response = client.get(url)
    assert response.headers["Content-Disposition"] == f"attachment; filename=job-{job_id}-annotated.zip"
    archive = zip_of(response)
    assert archive.namelist() == ["a.png", "a-2.png", "photo.jpg", "files.csv"]
    rows = manifest(archive)
    assert [(r["image"], r["filename"], r["objects"]) for r in rows] == [
        ("a.png", "a.png", "1"),
        ("a-2.png", "a.PNG", "1"),
        ("photo.jpg", "photo.jpg", "1"),
        ("", "broken.png", "0"),
    ]
    assert rows[3]["note"] == "could not be processed: the file could not be decoded as an image"
    colour = ImageColor.getrgb(PALETTE[1])
    for name, size in (("a.png", (200, 150)), ("a-2.png", (200, 150))):
        drawn = Image.open(io.BytesIO(archive.read(name))).convert("RGB")
        assert drawn.size == size and drawn.getpixel((20, 75)) == colour, name  # the square's left edge
    photo = Image.open(io.BytesIO(archive.read("photo.jpg")))
    assert photo.format == "JPEG" and photo.size == (160, 120)
    assert all(abs(a - b) < 40 for a, b in zip(photo.convert("RGB").getpixel((20, 75)), colour, strict=True))
    assert {info.compress_type for info in archive.infolist() if info.filename != "files.csv"} == {zipfile.ZIP_STORED}


def test_a_cancelled_job_draws_what_it_analysed_only_when_asked(quiet_app: Flask, storage: Storage) -> None:
    client = quiet_app.test_client()
    job = begin(storage, shapes_job(storage, key_of(quiet_app).tenant_id, 3))
    land(storage, job, 1)
    cancel(storage, job)
    url = f"/api/v1/jobs/{job.job_id}/annotated"
    refused = client.get(url)
    assert error_code(refused, 409) == "not_succeeded" and "partial=true" in refused.get_json()["error"]["message"]
    archive = zip_of(client.get(url, query_string={"partial": "true"}))
    assert archive.namelist() == ["img-1.jpg", "files.csv"]
    assert [(r["image"], r["note"]) for r in manifest(archive)] == [
        ("", "not analysed: the job ended first"),
        ("img-1.jpg", ""),
        ("", "not analysed: the job ended first"),
    ]
    other = quiet_app.test_client(key=None)
    assert other.get(url).status_code == 401
    assert error_code(client.get(f"/api/v1/jobs/{uuid.uuid4()}/annotated"), 404) == "not_found"


def noise_png(seed: int, side: int = 160) -> bytes:
    """A PNG that does not compress: the zip of such images is as large as they are."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    image.putpixel((0, 0), (seed % 256, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def streamed(client: FlaskClient, url: str) -> tuple[int, int, int]:
    """Fetch the zip at ``url`` a chunk at a time, as a client reading it would; the chunks, the bytes, and the most
    memory the app's Python objects held meanwhile (the statements compiled once before, as in a running API)."""
    client.get(url).close()
    chunks, total = 0, 0
    with tempfile.TemporaryFile() as received:  # the client's copy, outside what is measured
        tracemalloc.start()
        try:
            response = client.get(url)
            assert response.status_code == 200
            for chunk in response.response:
                chunks, total = chunks + 1, total + len(chunk)
                received.write(chunk)
            response.close()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        received.seek(0)
        assert zipfile.ZipFile(received).testzip() is None
    return chunks, total, peak


def test_the_zip_is_sent_as_it_is_made(quiet_app: Flask, storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page of files at a time (3 here), an image at a time: what the process holds while sending is the same
    for 8 images as for 32, a small part of the archive."""
    monkeypatch.setattr(annotated, "ZIP_PAGE", 3)
    client = quiet_app.test_client()
    measured = {}
    for count in (8, 32):
        images = [(f"noise-{i}.png", noise_png(i)) for i in range(count)]
        job_id = submitted(client, *images)
        complete_job(storage, job_id, lambda u: FileResult(u.id, u.file.width, u.file.height, [SQUARE]))
        measured[count] = streamed(client, f"/api/v1/jobs/{job_id}/annotated")
        chunks, total, peak = measured[count]
        print(f"\nannotated zip, {count} images: {total / 1e6:.1f} MB in {chunks} chunks, peak {peak / 1e6:.2f} MB")
        assert chunks >= count, "an image at a time"
    (_, small, small_peak), (_, _, large_peak) = measured[8], measured[32]
    entry = small / 8
    assert large_peak - small_peak < 4 * entry, "24 more images, yet not 4 more images' worth of memory"

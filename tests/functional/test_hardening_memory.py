"""Memory stays bounded whatever image comes in: the worker's decode and the API's annotated view.

Measured on the real processes from /proc: a worker's prefork child (its peak RSS,
``VmHWM``, reset before the job) and the sum of the RSS of gunicorn's master and
workers (polled while the requests run).
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from PIL import Image, ImageChops, ImageColor

from app.annotate import PALETTE
from app.reduced_decode import png_in_bands
from harness import services
from harness.images import image_bytes
from harness.processes import ServiceProcess, start_api, start_worker
from jobs.lifecycle import FileResult
from storage import Storage
from storage.tables import Upload
from tests.conftest import MakeApp
from tests.functional.hardening_support import (
    MB,
    children,
    solid_png,
    status_kib,
)
from tests.helpers import TestKey, complete_job, job_state, post_images, submit, wait_for_finished
from training.shapes import render_sample

# 9380 x 9380: 88 megapixels, under the upload limit of 89.5.
SIDE_88MP = 9380


def by_name(uploads: list[Upload]) -> list[Upload]:
    """A job's uploads in the order they were sent (``submit`` names them img-0, img-1…)."""
    return sorted(uploads, key=lambda upload: int(upload.filename.removeprefix("img-").removesuffix(".png")))


# --- Worker decode ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capped_worker(
    tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str], logs_dir: Path
) -> Iterator[tuple[ServiceProcess, dict[str, str]]]:
    """One prefork child on a vhost of its own, with a pixel cap between 88 and 89 megapixels."""
    vhost = f"yolo-hardening-{time.monotonic_ns() % 10**9}"
    env = {**services_env, "CELERY_BROKER_URL": services.create_vhost(vhost), "WORKER_MAX_IMAGE_PIXELS": "88500000"}
    worker = start_worker(env, logs_dir / "worker-hardening.log", queues="inference", concurrency=1)
    try:
        yield worker, env
    finally:
        worker.stop()
        services.delete_vhost(vhost)


@pytest.mark.slow
def test_eight_88_megapixel_pngs_keep_the_worker_child_under_1_gb(
    capped_worker: tuple[ServiceProcess, dict[str, str]], make_app: MakeApp, storage: Storage
) -> None:
    worker, env = capped_worker
    app = make_app(env)
    wait_for_finished(storage, submit(app, [image_bytes(640, 480, seed=51)]))
    (child,) = children(worker.pid)
    Path(f"/proc/{child}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = status_kib(child, "VmRSS")

    job_id = submit(app, [solid_png(SIDE_88MP, SIDE_88MP, (20 * i, 255 - 20 * i, 90)) for i in range(8)])
    wait_for_finished(storage, job_id, timeout=180)
    peak = status_kib(child, "VmHWM")
    growth = (peak - before) * 1024
    print(f"\nworker child {child}: RSS {before * 1024 / MB:.0f} MB before, peak growth {growth / MB:.0f} MB")

    job = job_state(storage, job_id)
    assert job.status == "succeeded"
    assert children(worker.pid) == [child], "the child was replaced (killed?)"
    for upload in job.uploads:
        assert upload.result.error is None
        assert (upload.result.width, upload.result.height) == (SIDE_88MP, SIDE_88MP)
    assert growth < 1000 * MB


@pytest.mark.slow
def test_over_the_pixel_cap_a_file_gets_an_error_and_the_rest_are_predicted(
    capped_worker: tuple[ServiceProcess, dict[str, str]], make_app: MakeApp, storage: Storage
) -> None:
    _worker, env = capped_worker
    job_id = submit(make_app(env), [solid_png(9440, 9440, (1, 2, 3)), image_bytes(64, 48, seed=52)])
    job = wait_for_finished(storage, job_id)
    assert job.status == "succeeded"
    over, fine = by_name(job.uploads)
    assert over.result.error is not None and "too many pixels (9440x9440" in over.result.error
    assert fine.result.error is None and (fine.result.width, fine.result.height) == (64, 48)


def iou(a: dict[str, float], b: dict[str, float]) -> float:
    width = min(a["x2"], b["x2"]) - max(a["x1"], b["x1"])
    height = min(a["y2"], b["y2"]) - max(a["y1"], b["y1"])
    inter = max(0.0, width) * max(0.0, height)
    area = (a["x2"] - a["x1"]) * (a["y2"] - a["y1"]) + (b["x2"] - b["x1"]) * (b["y2"] - b["y1"])
    return inter / (area - inter)


@pytest.mark.slow
def test_boxes_found_on_a_reduced_decode_are_in_the_original_pixels(
    capped_worker: tuple[ServiceProcess, dict[str, str]], make_app: MakeApp, storage: Storage
) -> None:
    _worker, env = capped_worker
    image, _ = render_sample(23, 1)
    big = image.resize((image.width * 4, image.height * 4), Image.Resampling.NEAREST)
    encoded = []
    for picture in (image, big):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    small, large = by_name(wait_for_finished(storage, submit(make_app(env), encoded)).uploads)
    assert (large.result.width, large.result.height) == big.size
    expected = [{k: v * 4 for k, v in d["box"].items()} for d in small.result.detections]
    found = [d["box"] for d in large.result.detections]
    assert expected, "the shapes model found nothing in a shapes image"
    assert len(found) == len(expected)
    for box in expected:
        assert max(iou(box, other) for other in found) > 0.85, (box, found)


# --- Annotated view --------------------------------------------------------------------------


def api_rss_kib(master: int) -> int:
    """The RSS of gunicorn's master and workers together."""
    total = 0
    for pid in [master, *children(master)]:
        try:
            total += status_kib(pid, "VmRSS")
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class PeakSampler:
    """Polls a sum of RSS every few milliseconds in a thread; ``peak`` is the largest seen."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read
        self.peak = read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(0.01)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_eight_concurrent_annotated_views_of_a_49_megapixel_png_stay_under_500_mb(
    isolated_env: dict[str, str], logs_dir: Path, storage: Storage, api_key: TestKey
) -> None:
    server, api_url = start_api(isolated_env, logs_dir / "gunicorn-annotated.log")
    try:
        files = [("image", ("huge.png", solid_png(7000, 7000, (200, 200, 200)), "application/octet-stream"))]
        created = requests.post(f"{api_url}/api/v1/jobs", files=files, headers=api_key.headers, timeout=30)
        assert created.status_code == 202, created.text
        job_id, file_id = created.json()["job_id"], created.json()["files"][0]["file_id"]
        box = {"x1": 1000.0, "y1": 2000.0, "x2": 5000.0, "y2": 6000.0}
        detection = {"name": "square", "class": 1, "confidence": 0.9, "box": box}
        complete_job(storage, job_id, lambda u: FileResult(u.id, 7000, 7000, [detection]))
        url = f"{api_url}/api/v1/jobs/{job_id}/files/{file_id}/annotated"
        before = api_rss_kib(server.pid)
        with PeakSampler(lambda: api_rss_kib(server.pid)) as sampler, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: requests.get(url, headers=api_key.headers, timeout=60), range(8)))
        after = api_rss_kib(server.pid)
    finally:
        server.stop()
    growth = (sampler.peak - before) * 1024
    drawn = [answer for answer in answers if answer.status_code == 200]
    print(
        f"\nannotated 7000x7000 PNG x8: API RSS {before * 1024 / MB:.0f} MB before, peak growth {growth / MB:.0f} MB,"
        f" {(after - before) * 1024 / MB:.0f} MB kept; statuses {sorted(a.status_code for a in answers)}"
    )
    assert growth < 500 * MB
    assert drawn, "no request was drawn"
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] == "busy" and int(answer.headers["Retry-After"]) > 0
        else:
            assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/png", answer.text
    image = Image.open(io.BytesIO(drawn[0].content)).convert("RGB")
    assert image.size == (1750, 1750)  # reduced by 4
    assert image.getpixel((10, 10)) == (200, 200, 200)
    assert image.getpixel((875, 1500)) == ImageColor.getrgb(PALETTE[1])  # the box's bottom edge, at y2 / 4
    assert image.getpixel((875, 1200)) == (200, 200, 200)


# --- Reduced decodes, drawn where the boxes belong -------------------------------------------------


def annotated_of(client: FlaskClient, storage: Storage, data: bytes, box: dict[str, float]) -> Image.Image:
    """Upload ``data``, record one detection with ``box`` (original pixels), fetch the annotated image."""
    created = post_images(client, ("big.jpg", data))
    assert created.status_code == 202, created.get_data(as_text=True)
    job_id, file_id = created.get_json()["job_id"], created.get_json()["files"][0]["file_id"]
    detection = {"name": "square", "class": 1, "confidence": 0.9, "box": box}
    complete_job(storage, job_id, lambda u: FileResult(u.id, u.file.width, u.file.height, [detection]))
    response = client.get(f"/api/v1/jobs/{job_id}/files/{file_id}/annotated")
    assert response.status_code == 200, response.get_data(as_text=True)
    return Image.open(io.BytesIO(response.data))


def test_a_large_jpeg_is_drawn_reduced_with_its_boxes_in_place(
    make_app: MakeApp, isolated_env: dict[str, str], storage: Storage
) -> None:
    client = make_app(isolated_env).test_client()
    for orientation, upright in ((1, (4000, 3000)), (6, (3000, 4000))):  # 6: shown turned a quarter clockwise
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        Image.new("RGB", (4000, 3000), (200, 200, 200)).save(buffer, format="JPEG", quality=95, exif=exif)
        box = {"x1": 1000.0, "y1": 1200.0, "x2": 2000.0, "y2": 2400.0}  # in the upright image's pixels
        drawn = annotated_of(client, storage, buffer.getvalue(), box)
        assert drawn.format == "JPEG"
        assert drawn.size == (upright[0] // 2, upright[1] // 2)  # 4000 > 3072: reduced by 2
        colour = ImageColor.getrgb(PALETTE[1])
        # The box's bottom edge at y2 / 2 = 1200 (its outline drawn inward, 7 px wide), and the inside of the box.
        on_edge, inside = drawn.convert("RGB").getpixel((750, 1197)), drawn.convert("RGB").getpixel((750, 900))
        assert all(abs(a - b) < 40 for a, b in zip(on_edge, colour, strict=True)), (orientation, on_edge)
        assert all(abs(a - 200) < 10 for a in inside), (orientation, inside)


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "LA", "RGBA"])
@pytest.mark.parametrize(("size", "factor"), [((301, 203), 2), ((300, 200), 4), ((64, 64), 1)])
def test_a_png_decoded_in_bands_equals_the_whole_decode_reduced(mode: str, size: tuple[int, int], factor: int) -> None:
    """Every colour type, filter and band boundary: the bands paste up to exactly the whole image, reduced."""
    noise = Image.frombytes("RGBA", size, os.urandom(size[0] * size[1] * 4))
    picture = noise.quantize(200) if mode == "P" else noise.convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")  # Pillow filters rows adaptively: every filter type occurs
    for band_bytes in (1, 5000, 1 << 24):  # one band per factor rows, several bands, a single band
        banded = png_in_bands(io.BytesIO(buffer.getvalue()), factor, band_bytes=band_bytes)
        whole = Image.open(io.BytesIO(buffer.getvalue()))
        if whole.mode == "P":
            whole = whole.convert("RGBA" if "transparency" in whole.info else "RGB")
        expected = (whole.reduce(factor) if factor > 1 else whole).convert("RGB")
        assert banded.size == expected.size
        assert ImageChops.difference(banded, expected).getbbox() is None, (mode, size, factor, band_bytes)

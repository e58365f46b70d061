"""The job page's downloads, its cards filling in while the job runs, the boxes over its thumbnails, and the jobs
list's columns: in-process first, then in Debian's chromium against a real gunicorn, at desktop and phone sizes.

No worker runs these jobs: the test writes each result as a running attempt would
(tests/functional/job_page_support.py), so it decides when a card should fill in."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask

from app.annotate import PALETTE
from harness.images import image_bytes
from jobs.exports import FORMATS
from jobs.lifecycle import fail_job
from storage import Storage
from tests.conftest import ARTIFACTS, MakeApp, open_storage
from tests.functional.browser import watched_page
from tests.functional.job_page_support import (
    ShapesJob,
    begin,
    cancel,
    finish,
    land,
    named_job,
    shapes_job,
)
from tests.functional.test_web import PHONE, unbroken
from tests.helpers import TestKey, add_key, key_of

if TYPE_CHECKING:  # imported where used: only the browser tests need Playwright
    from playwright.sync_api import Browser, Page

DOWNLOAD = re.compile(r'<a href="([^"]+)" download data-format="([^"]+)">')
DESKTOP = {"width": 1280, "height": 900}
LONG_NAME = "a-very-long-file-name-without-any-space-from-a-camera-roll-0001.jpg"


def downloads(page: str) -> dict[str, str]:
    """The page's download links by format."""
    return {name: html.unescape(href) for href, name in DOWNLOAD.findall(page)}


def found(page: str) -> list[str]:
    """What each image card says was found."""
    return re.findall(r'<span class="found">([^<]*)</span>', page)


# In-process


@pytest.fixture()
def quiet_app(make_app: MakeApp, isolated_env: dict[str, str]) -> Flask:
    """An app whose jobs no worker takes."""
    return make_app(isolated_env)


def test_a_succeeded_job_offers_every_export_and_its_annotated_images(quiet_app: Flask, storage: Storage) -> None:
    client = quiet_app.test_client()
    job = shapes_job(storage, key_of(quiet_app).tenant_id, 3)
    finish(storage, job)
    page = client.get(f"/jobs/{job.job_id}").get_data(as_text=True)
    links = downloads(page)
    assert list(links) == [*FORMATS, "annotated"]
    for name, url in links.items():
        assert "partial" not in url
        response = client.get(url)
        body = response.get_data()
        assert response.status_code == 200 and body, (name, body[:200])
        assert response.headers["Content-Disposition"].startswith("attachment; filename=job-")
    boxes = page.split('class="thumb-boxes"')[1:]
    assert [part.split("</svg>")[0].count("<rect ") for part in boxes] == [len(s) for s in job.shapes]
    assert 'id="partial-note"' not in page and "Waiting…" not in page


def test_a_cancelled_job_offers_what_it_analysed_and_says_what_it_never_reached(
    quiet_app: Flask, storage: Storage
) -> None:
    client = quiet_app.test_client()
    job = begin(storage, shapes_job(storage, key_of(quiet_app).tenant_id, 4))
    land(storage, job, 1)
    cancel(storage, job)
    page = client.get(f"/jobs/{job.job_id}").get_data(as_text=True)
    links = downloads(page)
    assert list(links) == [*FORMATS, "annotated"] and all("partial=true" in url for url in links.values())
    assert "The job ended cancelled: these hold the 1 of\n      4 images it analysed." in page
    coco = client.get(links["coco"]).get_json()
    assert len(coco["images"]) == 1 and len(coco["annotations"]) == len(job.shapes[1])
    assert zipfile.ZipFile(io.BytesIO(client.get(links["annotated"]).get_data())).namelist() == [
        "img-1.jpg",
        "files.csv",
    ]
    assert found(page).count("Not analysed: the job was cancelled first") == 3 and "Waiting…" not in found(page)
    assert "3 images were\n      not analysed: the job was cancelled first." in page


def test_no_downloads_before_the_end_or_when_nothing_was_analysed(quiet_app: Flask, storage: Storage) -> None:
    client = quiet_app.test_client()
    job = shapes_job(storage, key_of(quiet_app).tenant_id, 2)
    queued = client.get(f"/jobs/{job.job_id}").get_data(as_text=True)
    assert downloads(queued) == {} and 'id="downloads-later"' in queued and found(queued) == ["Waiting…"] * 2
    with storage.database.transaction() as session:
        assert fail_job(session, job.job_id, "model_unavailable", "The model's weights are missing.")
    failed = client.get(f"/jobs/{job.job_id}").get_data(as_text=True)
    assert downloads(failed) == {} and 'id="nothing-to-download"' in failed
    assert found(failed) == ["Not analysed: the job failed first"] * 2


def test_the_jobs_list_shows_a_short_id_progress_and_the_model(quiet_app: Flask, storage: Storage) -> None:
    client = quiet_app.test_client()
    job = begin(storage, shapes_job(storage, key_of(quiet_app).tenant_id, 3))
    land(storage, job, 0)
    page = client.get("/jobs").get_data(as_text=True)
    headers = re.findall(r'<th scope="col">([^<]+)</th>', page)
    assert headers == ["Job", "Created", "Status", "Progress", "Files", "Model"]
    row = page[page.index(f'href="/jobs/{job.job_id}"') :].split("</tr>")[0]
    assert f"<code>{str(job.job_id)[:8]}</code>" in row
    assert '<progress max="3" value="1"' in row and "1 of 3" in row
    assert '<td class="model" data-label="Model">shapes</td>' in row


# In chromium


@pytest.fixture(scope="module")
def module_storage(services_env: dict[str, str]) -> Iterator[Storage]:
    store = open_storage(services_env)
    yield store
    store.dispose()


@pytest.fixture(scope="module")
def pages_key(module_storage: Storage) -> TestKey:
    """A tenant of this module's own: its jobs list holds only this module's jobs."""
    return add_key(module_storage, f"pages-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def finished_job(module_storage: Storage, pages_key: TestKey) -> ShapesJob:
    job = shapes_job(module_storage, pages_key.tenant_id, 3)
    finish(module_storage, job)
    return job


@pytest.fixture()
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def check_download(kind: str, data: bytes, job: ShapesJob, images: int) -> None:
    """What a downloaded file holds, by its format: the job's ``images`` analysed images and their shapes."""
    objects = sum(len(shapes) for shapes in job.shapes[:images])
    if kind == "coco":
        coco = json.loads(data)
        assert (len(coco["images"]), len(coco["annotations"])) == (images, objects)
    elif kind == "labelstudio":
        tasks = json.loads(data)
        assert len(tasks) == images and sum(len(t["predictions"][0]["result"]) for t in tasks) == objects
    elif kind == "csv":
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        assert len([r for r in rows if r["name"]]) == objects
    elif kind == "yolo":
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        assert len([n for n in names if n.startswith("labels/")]) == images and "data.yaml" in names
    else:
        assert kind == "annotated"
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        assert len(names) == images + 1 and names[-1] == "files.csv"


def download_all(page: Page, job: ShapesJob, images: int) -> list[str]:
    """Click each of the page's download links as a person would; check each file; the formats clicked."""
    clicked = []
    for link in page.locator("#downloads a").all():
        kind = link.get_attribute("data-format") or ""
        with page.expect_download() as info:
            link.click()
        download = info.value
        assert download.suggested_filename.startswith(f"job-{job.job_id}"), download.suggested_filename
        check_download(kind, Path(download.path()).read_bytes(), job, images)
        clicked.append(kind)
    return clicked


@pytest.mark.browser
def test_every_download_of_the_job_page_is_a_real_file(
    browser: Browser,
    api_url: str,
    pages_key: TestKey,
    finished_job: ShapesJob,
    module_storage: Storage,
    artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    with watched_page(browser, api_url, pages_key) as watched:
        page = watched.page
        page.set_viewport_size(DESKTOP)
        page.goto(f"/jobs/{finished_job.job_id}")
        expect(page.get_by_role("heading", name="Download")).to_be_visible()
        assert download_all(page, finished_job, 3) == [*FORMATS, "annotated"]
        page.locator("#downloads").screenshot(path=str(artifacts / "job-downloads.png"))

        page.set_viewport_size(PHONE)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert unbroken(page, ".download-list a") == []
        page.screenshot(path=str(artifacts / "job-downloads-phone.png"), full_page=True)

        cancelled = begin(module_storage, shapes_job(module_storage, pages_key.tenant_id, 3, first=3))
        land(module_storage, cancelled, 0, 2)
        cancel(module_storage, cancelled)
        page.goto(f"/jobs/{cancelled.job_id}")
        expect(page.locator("#partial-note")).to_have_text(
            "The job ended cancelled: these hold the 2 of 3 images it analysed."
        )
        partial = ShapesJob(cancelled.job_id, [cancelled.shapes[0], cancelled.shapes[2]])
        assert download_all(page, partial, 2) == [*FORMATS, "annotated"]
        page.screenshot(path=str(artifacts / "job-downloads-partial-phone.png"), full_page=True)
        assert watched.errors == [] and watched.outside == [] and watched.dialogs == []


def drawn_boxes(page: Page, position: int) -> list[dict[str, Any]]:
    """Each box over a card's thumbnail, where it is on the screen and where its image's pixels put it."""
    return page.locator(f'li.thumb[data-position="{position}"]').evaluate(
        """card => {
            const img = card.querySelector("img");
            const svg = card.querySelector("svg.thumb-boxes");
            const frame = img.getBoundingClientRect();
            const [, , width, height] = svg.getAttribute("viewBox").split(" ").map(Number);
            const scale = Math.min(frame.width / img.naturalWidth, frame.height / img.naturalHeight);
            const left = frame.left + (frame.width - img.naturalWidth * scale) / 2;
            const top = frame.top + (frame.height - img.naturalHeight * scale) / 2;
            const perPixel = img.naturalWidth * scale / width;
            return [...svg.querySelectorAll("rect")].map(rect => {
                const drawn = rect.getBoundingClientRect();
                const x = Number(rect.getAttribute("x")), y = Number(rect.getAttribute("y"));
                return {
                    colour: rect.getAttribute("stroke"),
                    drawn: [drawn.left, drawn.top, drawn.width, drawn.height],
                    expected: [left + x * perPixel, top + y * perPixel,
                               Number(rect.getAttribute("width")) * perPixel,
                               Number(rect.getAttribute("height")) * perPixel],
                    stroke: getComputedStyle(rect).strokeWidth,
                };
            });
        }"""
    )


def assert_boxes_over_the_thumbnail(page: Page, job: ShapesJob, position: int) -> None:
    page.locator(f'li.thumb[data-position="{position}"] img').evaluate("img => img.decode()")
    drawn = drawn_boxes(page, position)
    shapes = job.shapes[position]
    assert [box["colour"] for box in drawn] == [PALETTE[s.cls % len(PALETTE)] for s in shapes]
    for box in drawn:
        assert box["drawn"] == pytest.approx(box["expected"], abs=1.5), "the box lies where its pixels are"
        assert box["stroke"] == "2px"


@pytest.mark.browser
def test_thumbnails_have_their_boxes_drawn(
    browser: Browser, api_url: str, pages_key: TestKey, finished_job: ShapesJob, artifacts: Path
) -> None:
    with watched_page(browser, api_url, pages_key) as watched:
        page = watched.page
        for size, shot in ((DESKTOP, "job-thumbnail-boxes.png"), (PHONE, "job-thumbnail-boxes-phone.png")):
            page.set_viewport_size(size)
            page.goto(f"/jobs/{finished_job.job_id}")
            for position in range(len(finished_job.shapes)):
                assert_boxes_over_the_thumbnail(page, finished_job, position)
            page.locator(".thumbs").screenshot(path=str(artifacts / shot))
        assert watched.errors == [] and watched.outside == [] and watched.dialogs == []


def card_text(page: Page, position: int) -> str:
    return page.locator(f'li.thumb[data-position="{position}"] .found').inner_text()


def counts_of(job: ShapesJob, position: int) -> str:
    names: dict[str, int] = {}
    for shape in sorted(job.shapes[position], key=lambda s: s.cls):
        names[shape.name] = names.get(shape.name, 0) + 1
    return " · ".join(f"{name} {count}" for name, count in names.items())


@pytest.mark.browser
def test_cards_fill_in_while_the_job_runs_then_say_what_it_never_reached(
    browser: Browser, api_url: str, pages_key: TestKey, module_storage: Storage, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    job = begin(module_storage, shapes_job(module_storage, pages_key.tenant_id, 6, first=6))
    with watched_page(browser, api_url, pages_key) as watched:
        page = watched.page
        page.set_viewport_size(DESKTOP)
        polls: list[str] = []
        page.on("request", lambda request: "/progress" in request.url and polls.append(request.url))
        page.goto(f"/jobs/{job.job_id}")
        expect(page.locator("#status")).to_have_text("Running")
        expect(page.locator("li.thumb .found")).to_have_text(["Waiting…"] * 6)
        page.evaluate("window.samePage = true")  # gone if the page reloads

        land(module_storage, job, 0, 1, 2)
        for position in (0, 1, 2):
            expect(page.locator(f'li.thumb[data-position="{position}"] .found')).to_have_text(counts_of(job, position))
            assert_boxes_over_the_thumbnail(page, job, position)
        expect(page.locator("#progress-text")).to_have_text("3 of 6 images done")
        assert [card_text(page, p) for p in (3, 4, 5)] == ["Waiting…"] * 3
        assert page.evaluate("window.samePage") is True, "filled in without a reload"
        page.screenshot(path=str(artifacts / "job-filling-in.png"), full_page=True)
        page.set_viewport_size(PHONE)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=str(artifacts / "job-filling-in-phone.png"), full_page=True)

        cancel(module_storage, job)
        expect(page.locator("#status")).to_have_text("Cancelled")
        expect(page.locator("#cancelled-note")).to_be_visible()  # reloaded once it ended: the summary is drawn
        for position in (3, 4, 5):
            expect(page.locator(f'li.thumb[data-position="{position}"] .found')).to_have_text(
                "Not analysed: the job was cancelled first"
            )
        assert [card_text(page, p) for p in (0, 1, 2)] == [counts_of(job, p) for p in (0, 1, 2)]
        expect(page.locator("#unreached")).to_contain_text("3 images were not analysed")
        assert any("since=" in url for url in polls), "later polls ask only for what changed"
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=str(artifacts / "job-not-reached-phone.png"), full_page=True)
        page.set_viewport_size(DESKTOP)
        page.screenshot(path=str(artifacts / "job-not-reached.png"), full_page=True)
        assert watched.errors == [] and watched.outside == [] and watched.dialogs == []


@pytest.mark.browser
def test_the_jobs_list_has_id_progress_and_model_columns_and_fits_a_phone(
    browser: Browser, api_url: str, pages_key: TestKey, module_storage: Storage, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    names = [(LONG_NAME, image_bytes(seed=41, fmt="JPEG")), ("second.png", image_bytes(seed=42))]
    names += [(f"more-{i}.png", image_bytes(seed=43 + i)) for i in range(3)]
    job_id = named_job(module_storage, pages_key.tenant_id, names)
    with watched_page(browser, api_url, pages_key) as watched:
        page = watched.page
        page.set_viewport_size(DESKTOP)
        page.goto("/jobs")
        expect(page.locator(".jobs thead th")).to_have_text(["Job", "Created", "Status", "Progress", "Files", "Model"])
        row = page.locator("tr", has=page.locator(f'a[href="/jobs/{job_id}"]'))
        expect(row.locator(".job-link")).to_have_text(str(job_id)[:8])
        expect(row.locator(".done")).to_have_text("0 of 5")
        expect(row.locator(".model")).to_have_text("shapes")
        expect(row.locator(".filenames")).to_contain_text("and 2 more")
        page.screenshot(path=str(artifacts / "jobs-list.png"), full_page=True)

        page.set_viewport_size(PHONE)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert unbroken(page, ".jobs .filenames > span, .jobs code, .jobs .model, .jobs .status, .jobs .done") == []
        long_name = row.locator(".filenames > span").first
        assert long_name.get_attribute("title") == LONG_NAME
        assert long_name.evaluate("span => span.scrollWidth > span.clientWidth"), "cut short with an ellipsis"
        assert row.locator(".model").evaluate("cell => getComputedStyle(cell, '::before').content") == '"Model: "'
        page.screenshot(path=str(artifacts / "jobs-list-phone.png"), full_page=True)
        page.locator(".job-link a").first.click()
        page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
        assert watched.errors == [] and watched.outside == [] and watched.dialogs == []

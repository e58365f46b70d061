"""The upload form's resumable uploads in Debian's chromium: tus-js-client, served from the site, sends each file
to ``/api/v1/uploads`` through nginx and gunicorn, as users reach them, with the session cookie and the page's
CSRF token; the progress bar reaches 100 % and the job runs on the stored file; a reload mid-upload goes on
from where the server stopped."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from harness.processes import ServiceProcess, start_api, start_proxy
from tests.conftest import ARTIFACTS
from tests.functional.browser import watched_page
from tests.functional.test_hardening_proxy import ROOMY_PROXY_LIMITS
from tests.functional.test_web import UUID_PATH, bundled_model_in_use
from tests.helpers import TestKey
from training.shapes import render_sample

if TYPE_CHECKING:  # imported where used: only the browser tests need Playwright
    from playwright.sync_api import Browser, Page, Request

UPLOADS = "/api/v1/uploads"
MiB = 2**20
# Collects every value the form's progress bar takes (into window.progressSeen, exposed by the test).
WATCH_PROGRESS = """() => {
    const bar = document.getElementById("upload-progress");
    new MutationObserver(() => window.progressSeen(bar.value)).observe(bar, { attributes: true });
}"""


@pytest.fixture(scope="module")
def site(services_env: dict[str, str], logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site's URL as users reach it: gunicorn behind nginx (``python -m proxy``)."""
    env = {**services_env, **ROOMY_PROXY_LIMITS}
    server, api_url = start_api(env, logs_dir / "gunicorn-web-uploads.log")
    try:
        directory = tmp_path_factory.mktemp("nginx-web-uploads")
        proxy, url = start_proxy(env, api_url.removeprefix("http://"), directory, logs_dir / "nginx-web-uploads.log")
        try:
            yield url
        finally:
            proxy.stop()
    finally:
        server.stop()


def shapes_bmp(path: Path, seed: int) -> bytes:
    """A drawn-shapes picture blown up to 1280x960, as an uncompressed BMP (3.5 MiB), written to ``path``."""
    image, _shapes = render_sample(seed, 0)
    buffer = io.BytesIO()
    image.resize((1280, 960)).save(buffer, format="BMP")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def throttle(page: Page, bytes_per_second: float) -> None:
    """Chromium's own network throttling on ``page``'s uploads (DevTools protocol); -1 lifts it."""
    session = page.context.new_cdp_session(page)
    session.send("Network.enable")
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_second}
    session.send("Network.emulateNetworkConditions", conditions)


def upload_requests(page: Page) -> list[Request]:
    """The requests ``page`` sends to the upload endpoint, recorded as they go."""
    sent: list[Request] = []
    page.on("request", lambda request: UPLOADS in request.url and sent.append(request))
    return sent


@pytest.mark.browser
def test_the_form_uploads_by_tus_with_a_progress_bar_then_the_job_runs(
    browser: Browser,
    api: requests.Session,
    site: str,
    api_key: TestKey,
    worker: ServiceProcess,
    services_env: dict[str, str],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    data = shapes_bmp(tmp_path / "shapes-big.bmp", seed=31)
    with watched_page(browser, site, api_key) as watched:
        page = watched.page
        seen: list[float] = []
        page.expose_function("progressSeen", lambda value: seen.append(value))
        sent = upload_requests(page)
        page.goto("/")
        page.evaluate(WATCH_PROGRESS)
        throttle(page, 4 * MiB)  # about a second: the bar moves on the way
        page.get_by_label("Images").set_input_files(tmp_path / "shapes-big.bmp")
        token = page.locator("input[name=csrf_token]").first.get_attribute("value")
        page.get_by_role("button", name="Start detection").click()
        page.wait_for_url(UUID_PATH)

        assert seen[-1] == 100 and seen == sorted(seen), seen
        assert any(0 < value < 100 for value in seen), f"the bar jumped: {seen}"
        assert [r.method for r in sent][:2] == ["POST", "PATCH"] and {r.method for r in sent} == {"POST", "PATCH"}
        for request in sent:
            headers = request.all_headers()
            assert headers["x-csrftoken"] == token and "authorization" not in headers  # the session, no key
        upload_url = sent[0].response().header_value("location")
        stored = api.get(f"{site}{upload_url}", timeout=5).json()
        assert stored["offset"] == stored["size"] == len(data)
        assert stored["sha256"] == hashlib.sha256(data).hexdigest() and stored["filename"] == "shapes-big.bmp"

        expect(page.locator("#status")).to_have_text("Succeeded", timeout=60_000)
        expect(page.locator(".thumb .filename")).to_have_text("shapes-big.bmp")
        job = api.get(f"{site}/api/v1/jobs/{page.url.rsplit('/', 1)[1]}", timeout=5).json()
        (result,) = job["results"]
        assert result["file_id"] == stored["file_id"] and result["width"] == 1280
        if bundled_model_in_use(services_env):
            assert result["detections"], "the shapes model found nothing in the uploaded file"
        expect(page.locator("#reused")).to_have_count(0)

        page.locator("#rerun").get_by_text("Run again with…").click()
        page.get_by_role("button", name="Run again").click()  # the same settings: the result is reused
        page.wait_for_url(lambda url: UUID_PATH.search(url) is not None and job["job_id"] not in url)
        expect(page.locator("#status")).to_have_text("Succeeded", timeout=60_000)
        expect(page.locator("#reused")).to_contain_text("1 result reused from earlier jobs")
        assert watched.errors == [] and watched.outside == [] and watched.dialogs == []


def past_the_first_mib(request: Request) -> bool:
    """A PATCH sending the bytes after the first MiB: the server has that MiB."""
    return request.method == "PATCH" and int(request.headers.get("upload-offset", "0")) >= MiB


@pytest.mark.browser
def test_a_reload_mid_upload_resumes_where_the_server_stopped(
    browser: Browser, api: requests.Session, site: str, api_key: TestKey, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    path = tmp_path / "resumed.bmp"
    data = shapes_bmp(path, seed=32)
    with watched_page(browser, site, api_key) as watched:
        page = watched.page
        sent = upload_requests(page)
        page.goto("/")
        page.locator("#upload").evaluate("form => { form.dataset.chunkBytes = String(256 * 1024); }")
        throttle(page, MiB)
        page.get_by_label("Images").set_input_files(path)
        with page.expect_request(past_the_first_mib, timeout=20_000):
            page.get_by_role("button", name="Start detection").click()
        page.reload()

        (created,) = [r for r in sent if r.method == "POST"]
        upload_url = created.response().header_value("location")
        before = api.get(f"{site}{upload_url}", timeout=5).json()
        assert MiB <= before["offset"] < len(data), before
        expect(page.locator("#unfinished")).to_be_visible()
        expect(page.locator("#unfinished-list")).to_have_text("resumed.bmp (3.5 MB)")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "upload-unfinished.png"))

        throttle(page, -1)
        resumed_from = len(sent)
        page.get_by_label("Images").set_input_files(path)
        page.get_by_role("button", name="Start detection").click()
        page.wait_for_url(UUID_PATH)

        again = sent[resumed_from:]
        assert [r.method for r in again][:2] == ["HEAD", "PATCH"] and "POST" not in {r.method for r in again}
        assert all(r.url.endswith(upload_url) for r in again), "the same upload, not a new one"
        head, patch = again[0].response(), again[1]
        assert head is not None and head.header_value("upload-offset") == patch.all_headers()["upload-offset"]
        assert int(patch.all_headers()["upload-offset"]) >= before["offset"], "from where the server stopped"
        after = api.get(f"{site}{upload_url}", timeout=5).json()
        assert after["offset"] == len(data) and after["sha256"] == hashlib.sha256(data).hexdigest()
        expect(page.locator(".thumb .filename")).to_have_text("resumed.bmp")
        page.goto("/")
        expect(page.locator("#unfinished")).to_be_hidden()  # tus-js-client forgot the finished upload
        assert watched.errors == [] and watched.outside == [] and watched.dialogs == []

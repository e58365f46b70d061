"""The pages of video jobs: the upload form's video settings in-process, then Debian's chromium against a real
gunicorn and Celery worker: the job page plays the video with its boxes drawn over it, reads its detections a few
seconds at a time, and draws its segments as a timeline that follows the job while it runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask.testing import FlaskClient

from harness.processes import ServiceProcess, wait_until
from harness.videos import write_shapes_video
from jobs.video_exports import VIDEO_FORMATS
from tests.conftest import ARTIFACTS
from tests.functional.browser import watched_page
from tests.functional.test_web import PHONE, UUID_PATH, csrf_token, inference_paused, post_form, unbroken
from tests.helpers import TestKey, post_job

if TYPE_CHECKING:  # imported where used: only the browser tests need Playwright
    from playwright.sync_api import Browser, Locator, Page

# Three segments of VIDEO_SEGMENT_SECONDS (10 s): 10, 10 and 4 seconds.
VIDEO_SECONDS = 24
VIDEO_FPS = 10
SAMPLE_FPS = 5
SEGMENTS = 3
# app/static/video.js asks for this many seconds of detections at a time.
WINDOW_SECONDS = 4
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def shapes_mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """24 s of two shapes moving at 320x180, 10 fps, H.264 in MP4 (Debian's chromium plays it: its FFmpeg has
    the codec)."""
    path = tmp_path_factory.mktemp("video") / "shapes.mp4"
    write_shapes_video(path, seconds=VIDEO_SECONDS, width=320, height=180, fps=VIDEO_FPS, count=2)
    return path.read_bytes()


@pytest.fixture(scope="module")
def short_webm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("video") / "short.webm"
    write_shapes_video(path, seconds=4, width=320, height=180, fps=10, count=2, codec="libvpx-vp9", container="webm")
    return path.read_bytes()


# In-process: the form's video settings.


def test_the_form_takes_videos_and_their_settings(client: FlaskClient, short_webm: bytes) -> None:
    page = client.get("/").get_data(as_text=True)
    assert 'accept="image/jpeg,image/png,image/webp,image/bmp,image/tiff,video/*"' in page
    assert 'id="fps" name="fps" type="number" min="0.01" max="240.0"' in page
    assert 'id="track" name="track" type="checkbox" value="true"' in page and 'id="tiles" name="tiles"' in page
    fields = {"fps": "2.5", "start": "1", "end": "3.5", "track": "true", "tiles": "off"}
    sent = post_form(client, ("short.webm", short_webm), token=csrf_token(client), **fields)
    assert sent.status_code == 303, sent.get_data(as_text=True)
    job = client.get(sent.headers["Location"].replace("/jobs/", "/api/v1/jobs/")).get_json()
    assert {k: job["parameters"][k] for k in fields} == {
        "fps": 2.5,
        "start": 1.0,
        "end": 3.5,
        "track": True,
        "tiles": "off",
    }
    assert job["files"][0]["media"]["kind"] == "video"


def test_a_refused_setting_keeps_the_others(client: FlaskClient, short_webm: bytes) -> None:
    refused = post_form(client, ("short.webm", short_webm), token=csrf_token(client), fps="2", start="3", end="1")
    page = refused.get_data(as_text=True)
    assert refused.status_code == 400 and "end must be after start (and after 0 s)." in page
    assert '<details class="field" id="media-settings" open>' in page
    assert 'value="2"' in page and 'value="3"' in page and 'value="1"' in page


# In chromium, against a real gunicorn and worker.


def frames_windows(urls: list[str]) -> list[tuple[float, float]]:
    """The (start, end) of each request for a video's frames; every one must name both."""
    windows = []
    for url in urls:
        query = parse_qs(urlsplit(url).query)
        assert "start" in query and "end" in query, f"{url} asks for frames without a time range"
        windows.append((float(query["start"][0]), float(query["end"][0])))
    return windows


def video_loaded(player: Locator) -> None:
    """Wait until the player's video shows its first frame; fail with the browser's media error if it cannot."""
    state = wait_until(
        lambda: player.locator("video").evaluate(
            "video => video.error ? `media error ${video.error.code}: ${video.error.message}`"
            " : video.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA && 'loaded'"
        ),
        30,
        what="the video to load",
    )
    assert state == "loaded", f"the page's video did not load ({state}); the page's CSP must allow media-src 'self'"


def seek(player: Locator, seconds: float) -> None:
    player.locator("video").evaluate("(video, seconds) => { video.currentTime = seconds; }", seconds)


def play_for(page: Page, player: Locator, milliseconds: int) -> None:
    video = player.locator("video")
    video.evaluate("video => { video.muted = true; return video.play(); }")
    page.wait_for_timeout(milliseconds)
    video.evaluate("video => video.pause()")


def frame_at(api: requests.Session, api_url: str, job: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The analysed frame at ``seconds`` as the API gives it."""
    url = f"{api_url}{job['results'][0]['frames_url']}"
    frames = api.get(url, params={"start": seconds, "end": seconds + 0.01}, timeout=5).json()["frames"]
    assert len(frames) == 1, frames
    return frames[0]


# The canvas's alpha on a box's left edge and at its centre, the box scaled as video.js scales it: from the video's
# display pixels to the picture's rectangle inside the element (device pixels).
BOX_PIXELS = """(canvas, box) => {
    const video = canvas.parentElement.querySelector("video");
    const player = canvas.closest(".video-player");
    const ratio = canvas.width / canvas.clientWidth;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    const aspect = video.videoWidth / video.videoHeight;
    const pictureWidth = Math.min(width, height * aspect), pictureHeight = pictureWidth / aspect;
    const x0 = (width - pictureWidth) / 2, y0 = (height - pictureHeight) / 2;
    const scale = pictureWidth / Number(player.dataset.width);
    const context = canvas.getContext("2d");
    const alpha = (x, y) => context.getImageData(Math.round(x * ratio), Math.round(y * ratio), 1, 1).data[3];
    const middle = y0 + ((box.y1 + box.y2) / 2) * scale;
    return {edge: alpha(x0 + box.x1 * scale, middle), centre: alpha(x0 + ((box.x1 + box.x2) / 2) * scale, middle)};
}"""


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["x1"] < b["x2"] and b["x1"] < a["x2"] and a["y1"] < b["y2"] and b["y1"] < a["y2"]


def assert_boxes_drawn(player: Locator, frame: dict[str, Any]) -> None:
    """The player draws ``frame``'s boxes: their count, each box's edge on the canvas, their labels under it."""
    from playwright.sync_api import expect

    expect(player).to_have_attribute("data-frame", str(frame["frame"]))
    detections = frame["detections"]
    assert detections, f"the shapes model found nothing in frame {frame['frame']}"
    assert player.get_attribute("data-boxes") == str(len(detections))
    canvas = player.locator("canvas")
    for detection in detections:
        pixels = canvas.evaluate(BOX_PIXELS, detection["box"])
        assert pixels["edge"] > 0, f"no box drawn at {detection['box']}"
        covered = any(other is not detection and overlap(other["box"], detection["box"]) for other in detections)
        assert covered or pixels["centre"] == 0, "a box is an outline: the picture inside it stays visible"
    labels = [f"{d['name']} #{d['track']}" if "track" in d else d["name"] for d in detections]
    expect(player.locator(".video-now")).to_contain_text(", ".join(labels))


@pytest.fixture()
def artifacts() -> Iterator[Path]:
    ARTIFACTS.mkdir(exist_ok=True)
    yield ARTIFACTS


@pytest.mark.browser
def test_a_video_plays_with_its_boxes_and_its_segments_timeline(
    browser: Browser,
    api: requests.Session,
    api_url: str,
    api_key: TestKey,
    worker: ServiceProcess,
    services_env: dict[str, str],
    shapes_mp4: bytes,
    artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    with watched_page(browser, api_url, api_key) as watched:
        page = watched.page
        page.set_viewport_size(DESKTOP)
        frames_urls: list[str] = []
        page.on("request", lambda request: "/frames?" in request.url and frames_urls.append(request.url))
        player = page.locator(".video-player")
        cells = player.locator(".timeline li")

        with inference_paused(services_env["CELERY_BROKER_URL"]):
            posted = post_job(api, api_url, [("shapes.mp4", shapes_mp4)], track="true", fps=str(SAMPLE_FPS))
            assert posted.status_code == 202, posted.text
            job_id = posted.json()["job_id"]
            page.goto(f"/jobs/{job_id}")
            expect(page.locator("#status")).to_have_text("Queued")
            video_loaded(player)
            assert page.locator("video").evaluate("video => video.canPlayType('video/mp4; codecs=\"avc1.42E01E\"')")
            expect(cells).to_have_count(SEGMENTS)
            assert [cells.nth(i).get_attribute("data-status") for i in range(SEGMENTS)] == ["queued"] * SEGMENTS
            expect(page.locator("#frames-text")).to_contain_text("frames analysed")
            page.evaluate("window.samePage = true")  # gone if the page reloads
            play_for(page, player, 500)  # watched while the job runs: the page must not reload under the viewer
            expect(player.locator(".video-now")).to_contain_text("no analysed frame here")

        for index in range(SEGMENTS):  # polled into the timeline
            expect(cells.nth(index)).to_have_attribute("data-status", "done", timeout=180_000)
        expect(page.locator("#status")).to_have_text("Succeeded", timeout=60_000)
        expect(page.locator("#finished-note")).to_be_visible()
        assert page.evaluate("window.samePage") is True, "the page reloaded under a viewer"

        job = api.get(f"{api_url}/api/v1/jobs/{job_id}", timeout=5).json()
        assert job["status"] == "succeeded" and job["progress"]["frames"]["failed"] == 0
        segments = [part for part in job["parts"] if part["kind"] == "segment"]
        assert len(segments) == SEGMENTS and [s["end"] for s in segments] == [10.0, 20.0, 24.0]
        frames = job["progress"]["frames"]
        expect(page.locator("#frames-text")).to_have_text(f"{frames['done']} of {frames['total']} frames analysed")
        widths = [cells.nth(i).evaluate("cell => cell.getBoundingClientRect().width") for i in range(SEGMENTS)]
        assert widths[0] == pytest.approx(widths[1], abs=1) and widths[2] == pytest.approx(widths[0] * 0.4, abs=3)

        # Paused, the frame shown gets its boxes once its segment is done: the window asked for while it was
        # queued (empty) is asked again.
        seek(player, 1.01)
        assert_boxes_drawn(player, frame_at(api, api_url, job, 1.0))
        seek(player, 13.01)
        assert_boxes_drawn(player, frame_at(api, api_url, job, 13.0))
        page.screenshot(path=str(artifacts / "video-job.png"), full_page=True)
        seek(player, 1.01)
        expect(player).to_have_attribute("data-frame", "10")
        seek(player, 13.01)
        expect(player).to_have_attribute("data-frame", "130")
        asked_before_playing = frames_windows(frames_urls)

        play_for(page, player, 1500)  # in sync as it plays
        played_to = float(player.get_attribute("data-time") or 0)
        assert 13.2 < played_to < 16, played_to
        drawn = int(player.get_attribute("data-frame") or 0)
        assert drawn % 2 == 0 and abs(drawn / VIDEO_FPS - played_to) <= 1 / SAMPLE_FPS, (drawn, played_to)
        assert_boxes_drawn(player, frame_at(api, api_url, job, drawn / VIDEO_FPS))

        windows = frames_windows(frames_urls)
        assert all(end - start <= WINDOW_SECONDS for start, end in windows), windows
        assert {start for start, _ in windows} <= {0, 4, 12, 16}, "only windows the playhead came near"
        assert asked_before_playing.count((12, 16)) == 1, "seeking back to a window it has does not ask again"
        assert (12, 16) in windows and (20, 24) not in windows

        page.set_viewport_size(PHONE)
        page.wait_for_timeout(200)  # the canvas follows the element's new size
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert unbroken(page, ".nav a, .status, .facts dd") == []
        assert_boxes_drawn(player, frame_at(api, api_url, job, drawn / VIDEO_FPS))
        page.screenshot(path=str(artifacts / "video-job-phone.png"), full_page=True)

        page.reload()  # finished: the video's own exports are offered under it
        links = player.locator(".video-downloads a")
        expect(links).to_have_count(len(VIDEO_FORMATS))  # MOT too: the job has tracks
        for index, name in enumerate(VIDEO_FORMATS):
            link = links.nth(index)
            assert link.get_attribute("data-format") == name
            assert f"file_id={job['files'][0]['file_id']}" in (link.get_attribute("href") or "")
            with page.expect_download() as info:
                link.click()
            download = info.value
            data = Path(download.path()).read_bytes()
            assert download.suggested_filename.startswith(f"job-{job_id}-shapes-{name}"), download.suggested_filename
            assert data.count(b"\n") > 10 or len(data) > 1000, (name, data[:200])  # a row, a track or a frame each
        page.locator(".video-downloads").screenshot(path=str(artifacts / "video-job-downloads.png"))
        assert watched.errors == [] and watched.outside == [] and watched.dialogs == []


@pytest.mark.browser
def test_the_form_sends_a_video_with_its_settings(
    browser: Browser, api: requests.Session, api_url: str, api_key: TestKey, short_webm: bytes, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    with watched_page(browser, api_url, api_key) as watched:
        page = watched.page
        page.goto("/")
        page.get_by_label("Images and videos").set_input_files(
            files=[{"name": "short.webm", "mimeType": "video/webm", "buffer": short_webm}]
        )
        page.get_by_text("Video and large-image settings").click()
        page.get_by_label("Frames per second").fill("2")
        page.get_by_label("To (seconds)").fill("3")
        page.get_by_label("Follow objects from frame to frame").check()
        page.screenshot(path=str(artifacts / "upload-video-settings.png"), full_page=True)
        page.get_by_role("button", name="Start detection").click()
        page.wait_for_url(UUID_PATH)
        expect(page.locator(".video-player video")).to_have_count(1)
        expect(page.locator("#tracks")).to_have_text("Yes")
        expect(page.locator("#sampling")).to_have_text("2 per second")
        job = api.get(f"{api_url}/api/v1/jobs/{page.url.rsplit('/', 1)[1]}", timeout=5).json()
        assert (job["parameters"]["fps"], job["parameters"]["end"], job["parameters"]["track"]) == (2.0, 3.0, True)
        assert watched.errors == [] and watched.outside == [] and watched.dialogs == []

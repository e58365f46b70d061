"""The job API end to end through a real gunicorn, RabbitMQ and a real Celery worker."""

from __future__ import annotations

import uuid
from pathlib import Path

import requests

from harness.images import image_bytes
from harness.processes import ServiceProcess, wait_until
from storage import Storage
from storage.tables import StoredFile
from tests.conftest import MakeApp
from tests.helpers import post_job, submit, wait_for_job
from tests.unit.storage.test_media import video_bytes


def test_upload_runs_to_succeeded_with_results(api: requests.Session, api_url: str, worker: ServiceProcess) -> None:
    response = post_job(
        api, api_url, [("a.png", image_bytes(320, 240, 1)), ("b.jpg", image_bytes(200, 100, 2, "JPEG"))]
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert response.headers["Location"] == f"/api/v1/jobs/{body['job_id']}"
    assert [f["filename"] for f in body["files"]] == ["a.png", "b.jpg"]
    assert [f["content_type"] for f in body["files"]] == ["image/png", "image/jpeg"]

    job = wait_for_job(api_url, body["job_id"], headers=api.headers)
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"done": 2, "total": 2}
    assert [(r["filename"], r["width"], r["height"], r["error"]) for r in job["results"]] == [
        ("a.png", 320, 240, None),
        ("b.jpg", 200, 100, None),
    ]
    assert all(isinstance(r["detections"], list) for r in job["results"])
    assert job["started_at"] and job["finished_at"]


def test_same_bytes_twice_are_stored_once(api: requests.Session, api_url: str, services_env: dict[str, str]) -> None:
    data = image_bytes(90, 60, 4242)
    first = post_job(api, api_url, [("one.png", data)]).json()["files"][0]
    second = post_job(api, api_url, [("two.png", data)]).json()["files"][0]
    assert first["deduplicated"] is False
    assert second["deduplicated"] is True
    assert first["file_id"] == second["file_id"] and first["sha256"] == second["sha256"]
    blobs = list(Path(services_env["STORAGE_ROOT"], "blobs").rglob(first["sha256"]))
    assert len(blobs) == 1 and blobs[0].read_bytes() == data


def test_listing_is_newest_first_and_paginated(api: requests.Session, api_url: str) -> None:
    ids = [post_job(api, api_url, [("x.png", image_bytes(32, 32, 500 + i))]).json()["job_id"] for i in range(3)]
    page = api.get(f"{api_url}/api/v1/jobs", params={"limit": 2}, timeout=5).json()
    assert [j["job_id"] for j in page["jobs"]] == ids[::-1][:2]
    assert page["total"] >= 3 and "next" in page
    following = api.get(f"{api_url}{page['next']}", timeout=5).json()
    assert following["jobs"][0]["job_id"] == ids[0]


def test_file_metadata_and_content(api: requests.Session, api_url: str) -> None:
    data = image_bytes(40, 30, 77, "WEBP")
    file = post_job(api, api_url, [('../../etc/"evil name".webp', data)]).json()["files"][0]
    meta = api.get(f"{api_url}/api/v1/files/{file['file_id']}", timeout=5).json()
    assert meta["sha256"] == file["sha256"] and meta["size"] == len(data) and meta["content_type"] == "image/webp"
    content = api.get(f"{api_url}/api/v1/files/{file['file_id']}/content", timeout=5)
    assert content.content == data
    assert content.headers["Content-Type"] == "image/webp"
    assert content.headers["X-Content-Type-Options"] == "nosniff"
    disposition = content.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and ".." not in disposition and "/" not in disposition
    assert api.get(f"{api_url}/api/v1/files/not-a-uuid/content", timeout=5).status_code == 404


def test_a_video_part_is_stored_with_its_probe(api: requests.Session, api_url: str, storage: Storage) -> None:
    data = video_bytes("mp4", frames=30, rotation=-90)  # a quarter turn clockwise to show it upright
    response = post_job(api, api_url, [("clip.mp4", data)])
    assert response.status_code == 202, response.text
    file = response.json()["files"][0]
    meta = api.get(f"{api_url}/api/v1/files/{file['file_id']}", timeout=5).json()
    assert (meta["content_type"], meta["width"], meta["height"], meta["size"]) == ("video/mp4", 48, 64, len(data))
    content = api.get(f"{api_url}/api/v1/files/{file['file_id']}/content", timeout=5)
    assert content.content == data and content.headers["Content-Type"] == "video/mp4"
    with storage.database.transaction() as session:
        row = session.get(StoredFile, uuid.UUID(file["file_id"]))
        assert row is not None and row.media is not None
        assert {key: row.media[key] for key in ("kind", "container", "codec", "rotation", "frames")} == {
            "kind": "video",
            "container": "mp4",
            "codec": "h264",
            "rotation": 90,
            "frames": 30,
        }


def test_listing_filters_by_status_and_refuses_an_unknown_one(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    app = make_app(isolated_env, tenant=f"filter-{uuid.uuid4().hex[:8]}")  # no worker: jobs stay queued
    client = app.test_client()
    queued, cancelled = submit(app, [image_bytes(seed=960)]), submit(app, [image_bytes(seed=961)])
    assert client.post(f"/api/v1/jobs/{cancelled}/cancel").status_code == 202

    def listed(query: str) -> list[str]:
        response = client.get(f"/api/v1/jobs?{query}")
        assert response.status_code == 200, response.get_json()
        return [job["job_id"] for job in response.get_json()["jobs"]]

    assert listed("status=queued") == [queued]
    assert listed("status=cancelled") == [cancelled]
    assert listed("status=succeeded") == []
    assert listed("status=queued,cancelled") == listed("status=queued&status=cancelled") == [cancelled, queued]
    paged = client.get("/api/v1/jobs?status=queued,cancelled&limit=1").get_json()
    assert paged["total"] == 2 and paged["status"] == ["queued", "cancelled"]
    assert client.get(paged["next"]).get_json()["jobs"][0]["job_id"] == queued, "the next page keeps the filter"
    for bad in ("bogus", "queued,bogus", "Queued"):
        refused = client.get(f"/api/v1/jobs?status={bad}")
        assert refused.status_code == 400
        assert refused.get_json()["error"]["code"] == "invalid_parameter"
        assert "queued, running, succeeded, failed, cancelled" in refused.get_json()["error"]["message"]


def test_progress_moves_image_by_image_on_a_slow_job(
    api: requests.Session, api_url: str, worker: ServiceProcess
) -> None:
    """The session worker predicts up to 8 images at once, but a job that takes longer than 2 s shows its
    progress as it goes, never 0 until the end. Enough images at imgsz 1280 that even a fast backend on a
    quiet machine needs more than 2 s (about 0.2 s an image with OpenVINO, 1 s with PyTorch on 2 cores)."""
    total = 16
    images = [(f"slow-{i}.png", image_bytes(640, 480, seed=3000 + i)) for i in range(total)]
    job_id = post_job(api, api_url, images, imgsz="1280").json()["job_id"]
    seen: list[int] = []

    def finished() -> bool:
        body = api.get(f"{api_url}/api/v1/jobs/{job_id}", timeout=5).json()
        seen.append(body["progress"]["done"])
        return body["status"] == "succeeded"

    wait_until(finished, 180, interval=0.1, what="the slow job")
    print(f"\nprogress seen on a {total}-image job at imgsz 1280: {sorted(set(seen))}")
    assert any(0 < done < total for done in seen), f"progress jumped from 0 to {total}: {sorted(set(seen))}"
    assert seen == sorted(seen) and seen[-1] == total


def test_limits_say_what_one_job_may_hold(make_app: MakeApp, services_env: dict[str, str]) -> None:
    app = make_app({**services_env, "MAX_JOB_FILES": "250", "MAX_FILE_BYTES": "4096"})
    limits = app.test_client().get("/api/v1/limits").get_json()
    assert (limits["max_files_per_job"], limits["max_file_ids_per_job"], limits["max_file_bytes"]) == (100, 250, 4096)
    assert limits["max_upload_bytes"] == 64 * 1024 * 1024 and "image/png" in limits["content_types"]

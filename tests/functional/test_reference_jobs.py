"""Jobs on stored files (``file_id`` fields, a JSON ``file_ids`` body), reruns, and a job's files paged.

Through a real gunicorn and a real worker; refusals and the storage quota in-process on a vhost of
their own (no worker). Every tenant here is the test's own, so no other module's files or results
are in sight.
"""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import func, select, update
from werkzeug.test import TestResponse

from harness.images import image_bytes
from harness.processes import ServiceProcess
from storage import Storage
from storage.blobs import blob_relpath
from storage.tables import Job, StoredFile, Upload
from tests.conftest import MakeApp
from tests.functional.reference_support import (
    expire_bytes,
    own_image,
    own_other_file,
    submit_json,
    tenant_session,
)
from tests.helpers import key_of, post_images, post_job, wait_for_job


def copies_of(storage: Storage, sha256: str) -> int:
    with storage.database.transaction() as session:
        return session.scalar(select(func.count()).select_from(StoredFile).where(StoredFile.sha256 == sha256)) or 0


def test_a_job_runs_on_uploaded_images_then_held_files_in_order_without_a_byte_copied(
    storage: Storage, api_url: str, worker: ServiceProcess
) -> None:
    with tenant_session(storage, "refs") as (key, api):
        earlier = post_job(api, api_url, [("first.png", image_bytes(80, 60, 7101))]).json()
        of_job = earlier["files"][0]
        own = own_image(storage, key.tenant_id, image_bytes(70, 50, 7102), "mine.png")
        parts = [("image", ("new.png", image_bytes(60, 40, 7103), "application/octet-stream"))]
        fields = [("file_id", str(own)), ("file_id", of_job["file_id"]), ("conf", "0.3")]
        response = api.post(f"{api_url}/api/v1/jobs", files=parts, data=fields, timeout=30)
        assert response.status_code == 202, response.text
        body = response.json()
        assert [(f["filename"], f["deduplicated"]) for f in body["files"]] == [
            ("new.png", False),
            ("mine.png", True),
            ("first.png", True),
        ]
        assert [f["file_id"] for f in body["files"][1:]] == [str(own), of_job["file_id"]]
        assert body["files_total"] == 3
        job = wait_for_job(api_url, body["job_id"], headers=key.headers)
        assert job["status"] == "succeeded", job
        assert [(r["filename"], r["width"], r["height"]) for r in job["results"]] == [
            ("new.png", 60, 40),
            ("mine.png", 70, 50),
            ("first.png", 80, 60),
        ]
        assert copies_of(storage, of_job["sha256"]) == 1

        as_json = submit_json(api, api_url, {"file_ids": [of_job["file_id"]], "conf": 0.55, "imgsz": 320})
        assert as_json.status_code == 202, as_json.text
        shown = wait_for_job(api_url, as_json.json()["job_id"], headers=key.headers)
        assert shown["status"] == "succeeded", shown
        assert shown["parameters"]["conf"] == 0.55 and shown["parameters"]["imgsz"] == 320
        assert [f["file_id"] for f in shown["files"]] == [of_job["file_id"]]


def refused(response: TestResponse, status: int, code: str) -> str:
    """The refusal's message, once its status and code are as expected."""
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"]["code"] == code, body
    return body["error"]["message"]


def test_references_the_tenant_does_not_hold_or_cannot_run_are_refused_and_nothing_is_stored(
    make_app: MakeApp, isolated_env: dict[str, str], storage: Storage
) -> None:
    app = make_app(isolated_env, tenant=f"refused-{uuid.uuid4().hex[:8]}")
    client, tenant_id = app.test_client(), key_of(app).tenant_id
    with tenant_session(storage, "stranger") as (stranger, _):
        foreign = own_image(storage, stranger.tenant_id, image_bytes(30, 30, 7201), "theirs.png")
    own = own_image(storage, tenant_id, image_bytes(30, 30, 7202), "mine.png")
    archive = own_other_file(storage, tenant_id, uuid.uuid4().bytes * 40, "notes.zip")
    expired = own_image(storage, tenant_id, image_bytes(30, 30, 7203), "old.png")
    expire_bytes(storage, expired)
    unknown = uuid.uuid4()

    def post_ids(*ids: object) -> TestResponse:
        return client.post("/api/v1/jobs", json={"file_ids": [str(i) for i in ids]})

    message = refused(post_ids(own, foreign), 422, "unknown_file")
    assert str(foreign) in message and str(own) not in message, "another tenant's file is as unknown as none"
    assert str(unknown) in refused(post_ids(unknown), 422, "unknown_file")
    assert str(archive) in refused(post_ids(own, archive), 422, "not_an_image")
    refused(post_ids(own, expired), 410, "gone")
    form = client.post("/api/v1/jobs", data={"file_id": [str(own), str(unknown)]})
    refused(form, 422, "unknown_file")
    refused(client.post("/api/v1/jobs", data={"file_id": "not-an-id"}), 400, "invalid_parameter")
    refused(client.post("/api/v1/jobs", json={"file_ids": []}), 400, "no_image")
    refused(client.post("/api/v1/jobs", json={"file_ids": [str(own)], "colour": "red"}), 400, "invalid_parameter")
    refused(client.post("/api/v1/jobs", json={"file_ids": [str(own)], "conf": "high"}), 400, "invalid_parameter")
    refused(client.post("/api/v1/jobs", json=[str(own)]), 400, "invalid_json")
    bad_json = client.post("/api/v1/jobs", data=b"{", content_type="application/json")
    refused(bad_json, 400, "invalid_json")
    too_many = client.post("/api/v1/jobs", json={"file_ids": [str(own)] * 10_001})
    refused(too_many, 400, "too_many_files")
    padding = b" " * 700_000  # over the bound of a body naming MAX_JOB_FILES ids: refused unread
    too_large = client.post(
        "/api/v1/jobs", data=b'{"file_ids": ["' + str(own).encode() + b'"]' + padding + b"}",
        content_type="application/json",
    )  # fmt: skip
    refused(too_large, 413, "too_large")
    with storage.database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id)) == 0


def test_new_bytes_must_fit_the_storage_quota_and_held_files_cost_nothing(
    make_app: MakeApp, isolated_env: dict[str, str], storage: Storage
) -> None:
    first, second = image_bytes(200, 200, 7301), image_bytes(200, 200, 7302)
    quota = len(first) + len(second) // 2  # room for the first image, not for both
    app = make_app(isolated_env, tenant=f"quota-{uuid.uuid4().hex[:8]}", QUOTA_STORAGE_BYTES=str(quota))
    client = app.test_client()

    accepted = post_images(client, ("a.png", first))
    assert accepted.status_code == 202, accepted.get_json()
    file_id = accepted.get_json()["files"][0]["file_id"]
    assert post_images(client, ("again.png", first)).status_code == 202, "the same bytes again take no more room"
    assert client.post("/api/v1/jobs", json={"file_ids": [file_id] * 3}).status_code == 202
    refused(post_images(client, ("b.png", second)), 507, "storage_quota_exceeded")
    assert not storage.blobs.exists(blob_relpath(hashlib.sha256(second).hexdigest())), "no byte of it is kept"
    never = make_app(isolated_env, tenant=f"tiny-{uuid.uuid4().hex[:8]}", QUOTA_STORAGE_BYTES="100")
    refused(post_images(never.test_client(), ("a.png", first)), 413, "larger_than_quota")
    assert copies_of(storage, accepted.get_json()["files"][0]["sha256"]) == 1


def test_an_idempotency_key_covers_the_references(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    app = make_app(isolated_env, tenant=f"idem-{uuid.uuid4().hex[:8]}")
    client = app.test_client()
    one = post_images(client, ("a.png", image_bytes(40, 40, 7401)))
    two = post_images(client, ("b.png", image_bytes(40, 40, 7402)))
    a, b = one.get_json()["files"][0]["file_id"], two.get_json()["files"][0]["file_id"]
    headers = {"Idempotency-Key": f"refs-{uuid.uuid4()}"}
    first = client.post("/api/v1/jobs", json={"file_ids": [a, b]}, headers=headers)
    again = client.post("/api/v1/jobs", json={"file_ids": [a, b]}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json() == first.get_json()
    swapped = client.post("/api/v1/jobs", json={"file_ids": [b, a]}, headers=headers)
    refused_reuse = swapped.get_json()["error"]["code"]
    assert swapped.status_code == 422 and refused_reuse == "idempotency_key_reused"


def delete_file_of_uploads(storage: Storage, file_id: str) -> None:
    """What a tenant's DELETE of a file leaves of its jobs' uploads: no file, when, and no result."""
    with storage.database.transaction() as session:
        session.execute(
            update(Upload).where(Upload.file_id == uuid.UUID(file_id)).values(file_id=None, file_deleted_at=func.now())
        )


def test_a_rerun_is_a_new_job_on_the_same_files_with_its_parameters_changed(
    make_app: MakeApp, isolated_env: dict[str, str], storage: Storage
) -> None:
    app = make_app(isolated_env, tenant=f"rerun-{uuid.uuid4().hex[:8]}")
    client = app.test_client()
    images = [(f"r{n}.png", image_bytes(50, 40, 7500 + n)) for n in range(3)]
    original = post_images(client, *images, conf="0.4", imgsz="320").get_json()
    ids = [f["file_id"] for f in original["files"]]

    rerun = client.post(f"/api/v1/jobs/{original['job_id']}/rerun", data={"conf": "0.6"})
    assert rerun.status_code == 202, rerun.get_json()
    assert rerun.headers["Location"] == f"/api/v1/jobs/{rerun.get_json()['job_id']}"
    again = client.get(rerun.headers["Location"]).get_json()
    assert again["parameters"] == {
        "model": "shapes",
        "conf": 0.6,
        "iou": 0.7,
        "imgsz": 320,
        "fps": None,
        "start": None,
        "end": None,
        "track": False,
        "tiles": "off",
    }
    assert [(f["file_id"], f["filename"], f["deduplicated"]) for f in again["files"]] == [
        (i, name, True) for i, (name, _) in zip(ids, images, strict=True)
    ]
    assert all(copies_of(storage, f["sha256"]) == 1 for f in again["files"])

    by_json = client.post(f"/api/v1/jobs/{original['job_id']}/rerun", json={"model": "default", "imgsz": 640})
    assert client.get(by_json.headers["Location"]).get_json()["parameters"]["imgsz"] == 640

    headers = {"Idempotency-Key": f"rerun-{uuid.uuid4()}"}
    keyed = client.post(f"/api/v1/jobs/{original['job_id']}/rerun", data={"iou": "0.5"}, headers=headers)
    replay = client.post(f"/api/v1/jobs/{original['job_id']}/rerun", data={"iou": "0.5"}, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.get_json() == keyed.get_json()
    changed = client.post(f"/api/v1/jobs/{original['job_id']}/rerun", data={"iou": "0.6"}, headers=headers)
    assert changed.status_code == 422

    delete_file_of_uploads(storage, ids[1])
    shown = client.get(f"/api/v1/jobs/{original['job_id']}").get_json()
    assert shown["files"][1] == {"filename": "r1.png", "deleted": True, "deleted_at": shown["files"][1]["deleted_at"]}
    assert shown["files"][1]["deleted_at"] is not None
    skipped = client.post(f"/api/v1/jobs/{original['job_id']}/rerun").get_json()
    assert [f["file_id"] for f in skipped["files"]] == [ids[0], ids[2]]
    for file_id in (ids[0], ids[2]):
        delete_file_of_uploads(storage, file_id)
    refused(client.post(f"/api/v1/jobs/{original['job_id']}/rerun"), 409, "no_files")

    stranger = make_app(isolated_env, tenant=f"stranger-{uuid.uuid4().hex[:8]}").test_client()
    refused(stranger.post(f"/api/v1/jobs/{rerun.get_json()['job_id']}/rerun"), 404, "not_found")
    refused(client.post(f"/api/v1/jobs/{original['job_id']}/rerun", data={"model": "nope"}), 400, "unknown_model")


def test_a_job_shows_a_page_of_its_files(make_app: MakeApp, isolated_env: dict[str, str]) -> None:
    app = make_app(isolated_env, tenant=f"pages-{uuid.uuid4().hex[:8]}")
    client = app.test_client()
    images = [(f"p{n}.png", image_bytes(30, 30, 7600 + n)) for n in range(5)]
    job_id = post_images(client, *images).get_json()["job_id"]
    page = client.get(f"/api/v1/jobs/{job_id}?files_limit=2&files_offset=3").get_json()
    assert [f["filename"] for f in page["files"]] == ["p3.png", "p4.png"]
    assert (page["files_total"], page["files_offset"], page["files_limit"]) == (5, 3, 2)
    assert client.get(f"/api/v1/jobs/{job_id}").get_json()["files_limit"] == 100
    assert client.get(f"/api/v1/jobs/{job_id}?files_limit=1001").status_code == 400

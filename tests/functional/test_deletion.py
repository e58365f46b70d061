"""Deleting jobs and files for real, and the storage quota, through the in-process API on real PostgreSQL and disk.

What is checked is what stays: rows (uploads, results, tenant files, the audit tombstone),
and the blobs on the volume, removed exactly when no job or tenant refers to them any more.
The module has a database of its own, emptied before each test, each test a storage root
of its own, and a RabbitMQ vhost no worker consumes (jobs stay queued unless a test runs
an attempt by hand, as a worker would).
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from PIL import Image
from sqlalchemy import func, select, text

from accounts.keys import find_principal
from harness.images import image_bytes
from harness.processes import wait_until
from jobs.lifecycle import JobParams, begin_attempt, create_job, record_results
from storage import Storage
from storage.tables import Result, ResumableUpload, StoredFile, TenantFile, Tombstone, Upload
from tests.conftest import MakeApp, open_storage
from tests.functional.storage_support import resumable_upload
from tests.helpers import (
    LEASE,
    KeyClient,
    TestKey,
    app_key,
    complete_job,
    job_state,
    key_of,
    new_upload,
    post_images,
    submit,
)


@pytest.fixture()
def env(isolated_env: dict[str, str], module_database_url: str, tmp_path: Path) -> dict[str, str]:
    """The run's services with the module's (emptied) database, a storage root and a vhost of this test's own."""
    env = {**isolated_env, "DATABASE_URL": module_database_url, "STORAGE_ROOT": str(tmp_path / "storage")}
    store = open_storage(env)
    try:
        with store.database.transaction() as session:
            session.execute(
                text(
                    "TRUNCATE tombstones, tenant_files, resumable_uploads, results, uploads, jobs, stored_files CASCADE"
                )
            )
    finally:
        store.dispose()
    return env


@pytest.fixture()
def store(env: dict[str, str]) -> Iterator[Storage]:
    storage = open_storage(env)
    yield storage
    storage.dispose()


def noise_png(side: int, seed: int) -> bytes:
    """A PNG of random pixels: about 3 * side * side bytes, since noise does not compress."""
    image = Image.frombytes("RGB", (side, side), hashlib.shake_256(seed.to_bytes(4, "big")).digest(3 * side * side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def key_id(store: Storage, key: TestKey) -> uuid.UUID:
    with store.database.transaction() as session:
        principal = find_principal(session, key.key)
    assert principal is not None
    return principal.key_id


def file_ids(store: Storage, job_id: str) -> list[uuid.UUID]:
    """The stored file of each of the job's uploads, in order."""
    ids = [u.file_id for u in job_state(store, job_id).uploads]
    assert None not in ids
    return [i for i in ids if i is not None]


def stored(store: Storage, file_id: uuid.UUID) -> StoredFile:
    with store.database.transaction() as session:
        row = session.get(StoredFile, file_id)
        assert row is not None
        session.expunge(row)
    return row


def on_disk(store: Storage, file_id: uuid.UUID) -> tuple[bool, bool]:
    """(row is live, bytes are on disk, hashing to the row's digest)."""
    row = stored(store, file_id)
    path = store.blobs.path_of(row.path)
    intact = path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256
    return row.deleted_at is None, intact


def tombstones(store: Storage) -> list[Tombstone]:
    with store.database.transaction() as session:
        rows = list(session.scalars(select(Tombstone).order_by(Tombstone.deleted_at)))
        session.expunge_all()
    return rows


def count(store: Storage, table: type[Any], *conditions: Any) -> int:
    with store.database.transaction() as session:
        return session.scalar(select(func.count()).select_from(table).where(*conditions)) or 0


def content(client: KeyClient, file_id: uuid.UUID) -> bytes:
    """A file's bytes through the API (the response closed, so its file handle is too)."""
    with client.get(f"/api/v1/files/{file_id}/content") as response:
        assert response.status_code == 200, response.status_code
        return response.data


def tenant_client(app: Flask, tenant: str, admin: bool = False) -> tuple[KeyClient, TestKey]:
    key = app_key(app, tenant, admin=admin)
    client = app.test_client(key=key)
    assert isinstance(client, KeyClient)
    return client, key


def test_deleting_a_job_frees_the_bytes_no_one_else_refers_to(
    make_app: MakeApp, env: dict[str, str], store: Storage
) -> None:
    app = make_app(env)
    client, other = app.test_client(), tenant_client(app, "other")[0]
    own, shared_in_tenant, shared_across = image_bytes(seed=1), image_bytes(seed=2), image_bytes(seed=3)
    job = submit(app, [own, shared_in_tenant, shared_across])
    sibling = submit(app, [shared_in_tenant])
    others = post_images(other, ("theirs.png", shared_across)).get_json()["job_id"]
    complete_job(store, job)
    files = file_ids(store, job)

    assert client.delete(f"/api/v1/jobs/{job}").status_code == 204

    assert client.get(f"/api/v1/jobs/{job}").status_code == 404
    assert client.delete(f"/api/v1/jobs/{job}").status_code == 404
    assert count(store, Upload, Upload.job_id == uuid.UUID(job)) == 0
    assert count(store, Result, Result.job_id == uuid.UUID(job)) == 0
    assert on_disk(store, files[0]) == (False, False)
    assert on_disk(store, files[1]) == on_disk(store, files[2]) == (True, True)
    assert client.get(f"/api/v1/files/{files[0]}").status_code == 404
    assert client.get(f"/api/v1/files/{files[1]}").status_code == 200  # the sibling job still holds it
    assert content(other, files[2]) == shared_across
    [tombstone] = tombstones(store)
    assert (tombstone.kind, tombstone.subject_id, tombstone.job_ids) == ("job", uuid.UUID(job), [uuid.UUID(job)])
    assert (tombstone.tenant_id, tombstone.deleted_by) == (key_of(app).tenant_id, key_id(store, key_of(app)))
    assert tombstone.bytes_freed == len(own)
    assert sorted(tombstone.files, key=lambda f: f["size"]) == sorted(
        (
            {"file_id": str(files[i]), "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "freed": i == 0}
            for i, data in enumerate([own, shared_in_tenant, shared_across])
        ),
        key=lambda f: f["size"],
    )
    assert job_state(store, sibling).status == job_state(store, others).status == "queued"


def test_deleting_a_running_job_cancels_its_attempt_first(
    make_app: MakeApp, env: dict[str, str], store: Storage
) -> None:
    app = make_app(env)
    job = uuid.UUID(submit(app, [image_bytes(seed=10), image_bytes(seed=11)]))
    files = file_ids(store, str(job))
    with store.database.transaction() as session:  # a worker's attempt takes the job
        run = begin_attempt(session, job, LEASE)
    assert run is not None and job_state(store, job).status == "running"

    assert app.test_client().delete(f"/api/v1/jobs/{job}").status_code == 204

    with store.database.transaction() as session:  # the attempt's next write finds it no longer holds the job
        assert record_results(session, job, run.lease_token, [], LEASE) is None
    assert app.test_client().get(f"/api/v1/jobs/{job}").status_code == 404
    assert [on_disk(store, f) for f in files] == [(False, False)] * 2
    [tombstone] = tombstones(store)
    assert tombstone.job_ids == [job] and tombstone.bytes_freed == sum(stored(store, f).size for f in files)


def test_deleting_a_file_used_by_several_jobs(make_app: MakeApp, env: dict[str, str], store: Storage) -> None:
    app = make_app(env)
    client = app.test_client()
    doomed, kept = image_bytes(seed=20), image_bytes(seed=21)
    first, second = submit(app, [doomed, kept]), submit(app, [kept, doomed])
    for job in (first, second):
        complete_job(store, job)
    unfinished = submit(app, [doomed])
    doomed_id, kept_id = file_ids(store, first)

    assert client.delete(f"/api/v1/files/{doomed_id}").status_code == 204

    assert client.get(f"/api/v1/files/{doomed_id}").status_code == 404
    assert client.delete(f"/api/v1/files/{doomed_id}").status_code == 404
    assert on_disk(store, doomed_id) == (False, False) and on_disk(store, kept_id) == (True, True)
    for job in (first, second):
        state = job_state(store, job)
        assert [u.file_id for u in state.uploads if u.file_deleted_at is None] == [kept_id]
        assert [u.result is None for u in state.uploads] == [u.file_id is None for u in state.uploads]
        assert state.status == "succeeded"
        files = client.get(f"/api/v1/jobs/{job}").get_json()["files"]
        assert [f.get("deleted", False) for f in files] == [u.file_id is None for u in state.uploads]
    assert job_state(store, unfinished).status == "cancelled"
    [tombstone] = tombstones(store)
    assert (tombstone.kind, tombstone.subject_id) == ("file", doomed_id)
    assert tombstone.job_ids == sorted(uuid.UUID(j) for j in (first, second, unfinished))
    assert tombstone.files == [
        {"file_id": str(doomed_id), "sha256": hashlib.sha256(doomed).hexdigest(), "size": len(doomed), "freed": True}
    ]
    assert tombstone.bytes_freed == len(doomed) and tombstone.deleted_by == key_id(store, key_of(app))


def test_a_tenants_own_file_goes_with_its_finished_upload(
    make_app: MakeApp, env: dict[str, str], store: Storage
) -> None:
    app = make_app(env)
    tenant_id = key_of(app).tenant_id
    job = submit(app, [image_bytes(seed=30)])
    [file_id] = file_ids(store, job)
    with store.database.transaction() as session:  # as the tus server leaves a finished upload of the same bytes
        session.add(TenantFile(tenant_id=tenant_id, file_id=file_id, filename="mine.png"))
        session.add(resumable_upload(tenant_id, file_id))
    assert app.test_client().delete(f"/api/v1/jobs/{job}").status_code == 204
    assert on_disk(store, file_id) == (True, True)  # the tenant's own file still holds it

    assert app.test_client().delete(f"/api/v1/files/{file_id}").status_code == 204

    assert count(store, TenantFile) == count(store, ResumableUpload) == 0
    assert on_disk(store, file_id) == (False, False)
    assert [t.files[0]["freed"] for t in tombstones(store)] == [False, True]


def test_another_tenant_can_neither_see_nor_delete(make_app: MakeApp, env: dict[str, str], store: Storage) -> None:
    app = make_app(env)
    owner = app.test_client()
    stranger, _ = tenant_client(app, "stranger")
    admin, admin_key = tenant_client(app, "operators", admin=True)
    same, private = image_bytes(seed=40), image_bytes(seed=41)
    job = submit(app, [same, private])
    theirs = post_images(stranger, ("same.png", same)).get_json()["job_id"]
    same_id, private_id = file_ids(store, job)
    assert file_ids(store, theirs) == [same_id]  # one stored file for both tenants

    assert stranger.delete(f"/api/v1/jobs/{job}").status_code == 404
    refused = stranger.delete(f"/api/v1/files/{private_id}")
    assert refused.status_code == 404 and refused.get_json()["error"]["code"] == "not_found"
    assert stranger.get(f"/api/v1/files/{private_id}").status_code == 404
    assert owner.get(f"/api/v1/jobs/{job}").status_code == 200 and tombstones(store) == []

    assert owner.delete(f"/api/v1/files/{same_id}").status_code == 204
    assert owner.get(f"/api/v1/files/{same_id}").status_code == 404
    assert content(stranger, same_id) == same  # its own hold survives
    assert on_disk(store, same_id) == (True, True) and tombstones(store)[0].files[0]["freed"] is False

    # An admin deletes for every tenant (a privacy request), and any tenant's job.
    assert admin.delete(f"/api/v1/files/{same_id}").status_code == 204
    assert stranger.get(f"/api/v1/files/{same_id}").status_code == 404 and on_disk(store, same_id) == (False, False)
    assert admin.delete(f"/api/v1/jobs/{job}").status_code == 204
    assert on_disk(store, private_id) == (False, False)
    by_admin = tombstones(store)[1:]
    assert [(t.kind, t.tenant_id, t.deleted_by) for t in by_admin] == [
        ("file", None, key_id(store, admin_key)),
        ("job", key_of(app).tenant_id, key_id(store, admin_key)),
    ]


def test_storage_quota_and_usage(make_app: MakeApp, env: dict[str, str], store: Storage) -> None:
    first, second, huge = noise_png(32, 1), noise_png(32, 2), noise_png(64, 3)
    quota = len(first) + len(second) - 1
    assert len(huge) > quota >= max(len(first), len(second))
    app = make_app(env, QUOTA_STORAGE_BYTES=str(quota), QUOTA_PENDING_UPLOAD_BYTES="5000")
    client, tenant_id = app.test_client(), key_of(app).tenant_id
    other = tenant_client(app, "other")[0]

    job, again = submit(app, [first]), submit(app, [first])  # the same bytes again take no more room
    full = post_images(client, ("second.png", second))
    assert full.status_code == 507 and full.get_json()["error"]["code"] == "storage_quota_exceeded", full.get_json()
    never = post_images(client, ("huge.png", huge))
    assert never.status_code == 413 and never.get_json()["error"]["code"] == "larger_than_quota", never.get_json()
    assert post_images(other, ("second.png", second)).status_code == 202  # a quota is per tenant
    with store.database.transaction() as session:
        expired = resumable_upload(tenant_id, None, 4000, expires_in=timedelta(seconds=-1))  # awaits the sweep
        session.add_all([resumable_upload(tenant_id, None, 1234), resumable_upload(tenant_id, None, 766), expired])

    assert client.get("/api/v1/account").get_json()["storage"] == {
        "used_bytes": len(first),
        "quota_bytes": quota,
        "pending_upload_bytes": 2000,
        "pending_upload_quota_bytes": 5000,
    }
    assert other.get("/api/v1/account").get_json()["storage"]["used_bytes"] == len(second)

    for job_id in (job, again):
        assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 204
    assert client.get("/api/v1/account").get_json()["storage"]["used_bytes"] == 0
    assert post_images(client, ("second.png", second)).status_code == 202


def test_every_blob_left_on_disk_has_a_live_row(make_app: MakeApp, env: dict[str, str], store: Storage) -> None:
    """After a mix of deletions, the volume holds exactly the live rows' bytes (no orphan, nothing missing)."""
    app = make_app(env)
    client = app.test_client()
    images = [image_bytes(seed=50 + i) for i in range(6)]
    jobs = [submit(app, images[i : i + 3]) for i in range(4)]
    assert client.delete(f"/api/v1/jobs/{jobs[0]}").status_code == 204
    assert client.delete(f"/api/v1/files/{file_ids(store, jobs[2])[0]}").status_code == 204
    assert client.delete(f"/api/v1/jobs/{jobs[3]}").status_code == 204
    with store.database.transaction() as session:
        live = set(session.scalars(select(StoredFile.sha256).where(StoredFile.deleted_at.is_(None))))
    on_volume = {name for _, _, names in os.walk(store.blobs.blobs_dir) for name in names}
    assert on_volume == live == {hashlib.sha256(images[i]).hexdigest() for i in (1, 3, 4)}


def waiting_for_a_digest_lock(store: Storage) -> bool:
    with store.database.transaction() as session:
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        return bool(session.scalar(text(waiting)))


def test_a_deletion_waits_for_an_upload_of_the_same_bytes(
    make_app: MakeApp, env: dict[str, str], store: Storage
) -> None:
    """An upload between taking the digest's lock and committing its reference keeps the bytes it found."""
    app = make_app(env)
    data = image_bytes(seed=60)
    job = submit(app, [data])
    [file_id] = file_ids(store, job)
    with ThreadPoolExecutor(max_workers=1) as pool, store.database.transaction() as session:
        again = create_job(
            session, store.blobs, JobParams("default"), [new_upload(store.blobs, data, "again.png")], None
        )
        deleting = pool.submit(lambda: app.test_client().delete(f"/api/v1/jobs/{job}").status_code)
        wait_until(lambda: waiting_for_a_digest_lock(store), 10, what="the deletion to wait for the upload's lock")
        assert not deleting.done()
    assert deleting.result(timeout=10) == 204
    assert [u.file_id for u in job_state(store, again.id).uploads] == [file_id]
    assert on_disk(store, file_id) == (True, True) and tombstones(store)[0].files[0]["freed"] is False

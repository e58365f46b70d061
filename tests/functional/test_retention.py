"""Retention against real PostgreSQL and files on disk: expiry, tombstones and 410, races, the lock, leftovers, beat.

Time travels by moving ``jobs.finished_at`` (and ``stored_files.created_at``) back in the
database. The module has a database of its own, emptied before each test, and each test a
storage root of its own.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from config import Settings
from config.paths import PROJECT_ROOT
from harness.images import image_bytes
from harness.processes import VENV_BIN, ServiceProcess, start_worker, wait_until
from jobs.lifecycle import FileResult, withdraw_job
from jobs.retention import RetentionPolicy
from storage import Storage
from storage.blobs import blob_relpath
from storage.locks import lock_digests, maintenance_lock
from storage.maintenance.fsck import run_fsck
from storage.maintenance.reclaim import reclaim_blobs
from storage.maintenance.retention import find_expired, run_cleanup, tombstone_expired
from storage.tables import StoredFile, TenantFile, Upload
from tests.conftest import MakeApp
from tests.functional.storage_support import resumable_upload
from tests.helpers import add_key, complete_job, create_queued_job, job_state, key_of

DAYS = 30
POLICY = RetentionPolicy(DAYS)
HOUR = 3600
T = TypeVar("T")


def open_storage(env: dict[str, str]) -> Storage:
    settings = Settings.from_env(env)
    return Storage(settings.database_url, settings.storage_root)


@pytest.fixture()
def env(services_env: dict[str, str], module_database_url: str, tmp_path: Path) -> dict[str, str]:
    """The run's services with the module's (emptied) database and a storage root of this test's own."""
    env = {**services_env, "DATABASE_URL": module_database_url, "STORAGE_ROOT": str(tmp_path / "storage")}
    env.pop("RETENTION_DAYS", None)
    store = open_storage(env)
    try:
        with store.database.transaction() as session:
            session.execute(text("TRUNCATE results, uploads, jobs, stored_files CASCADE"))  # tenant files too
    finally:
        store.dispose()
    return env


@pytest.fixture()
def store(env: dict[str, str]) -> Iterator[Storage]:
    storage = open_storage(env)
    storage.blobs.ensure_layout()
    yield storage
    storage.dispose()


def circle(upload: Upload) -> FileResult:
    return FileResult(upload.id, 32, 32, [{"class_name": "circle"}])


def finish(store: Storage, job_id: uuid.UUID, days_ago: float) -> None:
    """Mark the job succeeded with a result per upload, ``days_ago`` days in the past."""
    complete_job(store, job_id, circle)
    with store.database.transaction() as session:
        session.execute(
            text("UPDATE jobs SET finished_at = now() - make_interval(secs => :s) WHERE id = :id"),
            {"s": days_ago * 86400, "id": job_id},
        )


def file_of(store: Storage, job_id: uuid.UUID) -> StoredFile:
    """The stored file of the job's first upload."""
    return job_state(store, job_id).uploads[0].file


def state(store: Storage, file: StoredFile) -> tuple[bool, bool]:
    """(row is live, bytes are on disk)."""
    with store.database.transaction() as session:
        row = session.get(StoredFile, file.id)
        assert row is not None
        live = row.deleted_at is None
    return live, store.blobs.exists(file.path)


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_expired_fresh_and_shared_blobs(store: Storage) -> None:
    expired = create_queued_job(store, image_bytes(32, 32, 1))
    fresh = create_queued_job(store, image_bytes(32, 32, 2))
    shared = image_bytes(32, 32, 3)
    shared_old, shared_new = create_queued_job(store, shared), create_queued_job(store, shared)
    pending_share = image_bytes(32, 32, 4)
    pending_old, pending_new = create_queued_job(store, pending_share), create_queued_job(store, pending_share)
    for job_id, days in [(expired, DAYS + 1), (fresh, DAYS - 1), (shared_old, 90), (shared_new, 1), (pending_old, 90)]:
        finish(store, job_id, days)
    # pending_new stays queued: an unfinished job keeps an old file alive.

    report = run_cleanup(store, POLICY)

    gone = file_of(store, expired)
    assert (report.status, report.tombstoned, report.files_deleted) == ("done", 1, 1)
    assert report.bytes_freed == gone.size and report.orphan_blobs_removed == report.temp_files_removed == 0
    assert state(store, gone) == (False, False)
    for job_id in (fresh, shared_old, shared_new, pending_old, pending_new):
        assert state(store, file_of(store, job_id)) == (True, True), job_id
    job = job_state(store, expired)  # the audit trail stays
    result = job.uploads[0].result
    assert job.status == "succeeded" and result is not None and result.detections == [{"class_name": "circle"}]
    again = run_cleanup(store, POLICY)
    assert (again.tombstoned, again.files_deleted, again.bytes_freed) == (0, 0, 0)


def content(client: FlaskClient, file_id: uuid.UUID) -> bytes:
    """A file's bytes through the API (the response closed, so its file handle is too)."""
    with client.get(f"/api/v1/files/{file_id}/content") as response:
        assert response.status_code == 200, response.status_code
        return response.data


def test_tombstone_answers_410_and_same_content_is_stored_anew(
    make_app: MakeApp, env: dict[str, str], store: Storage
) -> None:
    app = make_app(env)
    client, tenant_id = app.test_client(), key_of(app).tenant_id
    data = image_bytes(40, 30, 10)
    old_job = create_queued_job(store, data, tenant_id=tenant_id)
    finish(store, old_job, DAYS + 5)
    old_file = file_of(store, old_job)
    assert content(client, old_file.id) == data
    assert run_cleanup(store, POLICY).files_deleted == 1

    gone = client.get(f"/api/v1/files/{old_file.id}/content")
    assert gone.status_code == 410 and gone.get_json()["error"]["code"] == "gone", gone.get_json()
    assert client.get(f"/api/v1/files/{old_file.id}").get_json()["sha256"] == old_file.sha256
    results = client.get(f"/api/v1/jobs/{old_job}").get_json()["results"]
    assert [r["detections"] for r in results] == [[{"class_name": "circle"}]]

    new_job = create_queued_job(store, data, tenant_id=tenant_id)
    upload = job_state(store, new_job).uploads[0]
    assert upload.deduplicated is False and upload.file_id != old_file.id
    assert content(client, upload.file_id) == data
    assert client.get(f"/api/v1/files/{old_file.id}/content").status_code == 410


def test_row_of_a_withdrawn_job_expires_after_the_grace_period(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(32, 32, 20))
    file = file_of(store, job_id)
    with store.database.transaction() as session:
        withdraw_job(session, job_id)  # as when the broker refused the task
    assert run_cleanup(store, POLICY).tombstoned == 0 and state(store, file) == (True, True)
    with store.database.transaction() as session:
        session.execute(
            text("UPDATE stored_files SET created_at = now() - interval '2 hours' WHERE id = :id"), {"id": file.id}
        )
    assert run_cleanup(store, POLICY).files_deleted == 1 and state(store, file) == (False, False)


def test_a_tenants_own_file_is_kept_days_after_it_was_taken(store: Storage) -> None:
    tenant_id = add_key(store, "owner").tenant_id
    own, uploaded, used = (create_queued_job(store, image_bytes(32, 32, 80 + i), tenant_id=tenant_id) for i in range(3))
    files = [file_of(store, job_id) for job_id in (own, uploaded, used)]
    finish(store, used, 90)  # its job is long done, but the tenant took the file as its own since
    with store.database.transaction() as session:
        for job_id in (own, uploaded):  # a file no job refers to, as a finished resumable upload leaves it
            withdraw_job(session, job_id)
        session.add_all(
            [
                TenantFile(tenant_id=tenant_id, file_id=files[0].id, filename="own.png"),
                TenantFile(tenant_id=tenant_id, file_id=files[2].id, filename="used.png"),
            ]
        )
        session.add(resumable_upload(tenant_id, files[1].id, files[1].size))
        session.execute(text("UPDATE stored_files SET created_at = now() - interval '2 hours'"))

    assert run_cleanup(store, POLICY).tombstoned == 0
    assert [state(store, file) for file in files] == [(True, True)] * 3

    with store.database.transaction() as session:
        days_ago = {"s": (DAYS + 1) * 86400}
        session.execute(text("UPDATE tenant_files SET created_at = now() - make_interval(secs => :s)"), days_ago)
        session.execute(text("UPDATE resumable_uploads SET finished_at = now() - make_interval(secs => :s)"), days_ago)
    assert run_cleanup(store, POLICY).files_deleted == 3
    assert [state(store, file) for file in files] == [(False, False)] * 3


def test_upload_holding_the_digest_lock_is_never_undercut(store: Storage) -> None:
    data = image_bytes(32, 32, 30)
    old_job = create_queued_job(store, data)
    finish(store, old_job, DAYS + 1)
    old_file = file_of(store, old_job)

    # An upload of the same content is mid-transaction: the cleanup skips the digest.
    with store.database.transaction() as session:
        lock_digests(session, [old_file.sha256])
        report = run_cleanup(store, POLICY)
    assert (report.tombstoned, report.skipped) == (0, 1) and state(store, old_file) == (True, True)

    # The tombstone commits, then a re-upload installs new bytes at the same path before the bytes go.
    with store.database.transaction() as session:
        expired = POLICY.expired(session.scalar(text("SELECT now()")))
        assert tombstone_expired(session, expired, find_expired(session, expired, None, 10)) != []
    new_job = create_queued_job(store, data)
    assert reclaim_blobs(store, {old_file.sha256}).files == 0
    new_file = file_of(store, new_job)
    assert new_file.id != old_file.id and state(store, new_file) == (True, True)


def _after(start: threading.Barrier, delay: float, work: Callable[[], T]) -> T:
    start.wait()
    time.sleep(delay)
    return work()


def test_cleanup_racing_uploads_of_the_same_content_never_loses_referenced_bytes(store: Storage) -> None:
    outcomes: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i in range(50):
            data = image_bytes(32, 32, 100 + i)
            finish(store, create_queued_job(store, data), DAYS + 1)
            start = threading.Barrier(2)
            head_start = [0.0, random.uniform(0, 0.02)]
            random.shuffle(head_start)  # either side may go first, by up to 20 ms
            cleaning = pool.submit(_after, start, head_start[0], partial(run_cleanup, store, POLICY))
            uploading = pool.submit(_after, start, head_start[1], partial(create_queued_job, store, data))
            cleaning.result(timeout=30)
            new_job = uploading.result(timeout=30)
            outcomes["deduplicated" if job_state(store, new_job).uploads[0].deduplicated else "stored anew"] += 1
            file = file_of(store, new_job)
            assert state(store, file) == (True, True), f"iteration {i}: {outcomes}"
            assert hashlib.sha256(store.blobs.path_of(file.path).read_bytes()).hexdigest() == file.sha256
    run_cleanup(store, POLICY)
    with store.database.transaction() as session:
        live = session.scalars(text("SELECT path FROM stored_files WHERE deleted_at IS NULL")).all()
    assert len(live) == 50 and all(store.blobs.exists(p) for p in live)
    print(f"\nrace outcomes: {dict(outcomes)}")
    assert set(outcomes) == {"deduplicated", "stored anew"}, outcomes


def test_only_one_cleanup_runs_at_a_time(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(32, 32, 40))
    finish(store, job_id, DAYS + 1)
    with maintenance_lock(store.database.engine) as acquired:
        assert acquired
        skipped = run_cleanup(store, POLICY)
        assert run_cleanup(store, POLICY, dry_run=True).tombstoned == 1  # a dry run needs no lock
    assert (skipped.status, skipped.reason, skipped.tombstoned) == (
        "skipped",
        "another cleanup is running",
        0,
    ) and state(store, file_of(store, job_id)) == (
        True,
        True,
    )
    assert run_cleanup(store, POLICY).files_deleted == 1


def test_leftovers_and_dry_run(env: dict[str, str], store: Storage) -> None:
    live = create_queued_job(store, image_bytes(32, 32, 50))
    expired = create_queued_job(store, image_bytes(32, 32, 52))
    finish(store, expired, DAYS + 1)
    expired_file = file_of(store, expired)
    crashed = create_queued_job(store, image_bytes(32, 32, 51))
    finish(store, crashed, DAYS + 1)
    crashed_file = file_of(store, crashed)
    with store.database.transaction() as session:  # a cleanup that died between its commit and the unlink
        session.execute(text("UPDATE stored_files SET deleted_at = now() WHERE id = :id"), {"id": crashed_file.id})
    old_orphan, young_orphan = (store.blobs.path_of(blob_relpath(hashlib.sha256(n).hexdigest())) for n in (b"o", b"y"))
    for path in (old_orphan, young_orphan):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    age(old_orphan, 2 * HOUR)
    age(store.blobs.path_of(file_of(store, live).path), 2 * HOUR)
    old_temp, young_temp = store.blobs.tmp_dir / "upload-old.part", store.blobs.tmp_dir / "upload-young.part"
    old_temp.write_bytes(b"y" * 7)
    young_temp.write_bytes(b"y")
    age(old_temp, 2 * HOUR)

    dry_run = [str(VENV_BIN / "python"), "-m", "storage.maintenance", "cleanup", "--dry-run"]
    done = subprocess.run(dry_run, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=True)
    listed = done.stdout
    assert set(listed.splitlines()[:-1]) == {
        f"expired\t{expired_file.id} {expired_file.sha256} {expired_file.size} {expired_file.path}",
        f"temp\t{old_temp} 7",
        f"orphan\t{old_orphan.name} 10",
        f"orphan\t{crashed_file.sha256} {crashed_file.size}",
    }, listed
    assert old_orphan.exists() and old_temp.exists() and store.blobs.exists(crashed_file.path)
    assert state(store, expired_file) == (True, True)

    report = run_cleanup(store, POLICY)
    assert (report.tombstoned, report.files_deleted, report.temp_files_removed, report.orphan_blobs_removed) == (
        1,
        1,
        1,
        2,
    )
    assert report.bytes_freed == expired_file.size + 7 + 10 + crashed_file.size
    assert state(store, expired_file) == (False, False)
    assert not old_temp.exists() and not old_orphan.exists() and not store.blobs.exists(crashed_file.path)
    assert young_temp.exists() and young_orphan.exists() and state(store, file_of(store, live)) == (True, True)


def test_fsck_reports_and_repairs_what_is_safe(env: dict[str, str], store: Storage) -> None:
    missing, missing_in_use, corrupt = (create_queued_job(store, image_bytes(32, 32, 60 + i)) for i in range(3))
    for job_id in (missing, corrupt):
        finish(store, job_id, 1)
    files = {
        name: file_of(store, job_id)
        for name, job_id in [("missing", missing), ("in use", missing_in_use), ("corrupt", corrupt)]
    }
    store.blobs.delete(files["missing"].path)
    store.blobs.delete(files["in use"].path)
    store.blobs.path_of(files["corrupt"].path).write_bytes(b"bit rot")
    orphan = store.blobs.path_of(blob_relpath("ab" * 32))
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"no row")
    age(orphan, 2 * HOUR)

    def fsck(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(VENV_BIN / "python"), "-m", "storage.maintenance", "fsck", *args]
        return subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)

    check = fsck()
    assert check.returncode == 1, check.stderr
    assert sorted(line.split("\t")[:2] for line in check.stdout.splitlines()[:-1]) == [
        ["hash_mismatch", "found"],
        ["missing_bytes", "found"],
        ["missing_bytes", "found"],
        ["orphan_blob", "found"],
    ], check.stdout
    assert state(store, files["missing"]) == (True, False) and orphan.exists()

    repaired = run_fsck(store, repair=True)
    assert {(f.kind, f.repaired) for f in repaired.findings} == {
        ("missing_bytes", True),
        ("missing_bytes", False),
        ("hash_mismatch", True),
        ("orphan_blob", True),
    }
    assert state(store, files["missing"])[0] is False and state(store, files["in use"])[0] is True
    assert state(store, files["corrupt"]) == (False, False) and not orphan.exists()
    assert [p.read_bytes() for p in (store.blobs.root / "quarantine").iterdir()] == [b"bit rot"]
    assert [f.kind for f in run_fsck(store).findings] == ["missing_bytes"]  # only the one an unfinished job needs


def start_beat(env: dict[str, str], log_path: Path, schedule: Path) -> ServiceProcess:
    """A real ``celery -A tasks beat`` with its schedule state in ``schedule``."""
    argv = [str(VENV_BIN / "celery"), "-A", "tasks", "beat", "--schedule", str(schedule), "--loglevel", "INFO"]
    return ServiceProcess(argv, env, log_path).start()


def test_beat_triggers_the_cleanup_through_rabbitmq(
    isolated_env: dict[str, str], env: dict[str, str], store: Storage, logs_dir: Path, tmp_path: Path
) -> None:
    job_id = create_queued_job(store, image_bytes(32, 32, 70))
    finish(store, job_id, DAYS + 1)
    file = file_of(store, job_id)
    beat_env = {
        **env,
        "CELERY_BROKER_URL": isolated_env["CELERY_BROKER_URL"],
        "RETENTION_CLEANUP_INTERVAL_SECONDS": "2",
    }
    worker = start_worker(beat_env, logs_dir / "worker-retention.log", queues="maintenance", concurrency=1)
    beat = start_beat(beat_env, logs_dir / "beat-retention.log", tmp_path / "celerybeat-schedule")
    try:
        wait_until(lambda: state(store, file) == (False, False), 90, what="beat-triggered cleanup")
        runs = wait_until(
            lambda: [line for line in worker.json_log_lines() if line["message"].startswith("retention cleanup done")],
            30,
            what="the cleanup's log line",
        )
    finally:
        beat.stop()
        worker.stop()
    assert "Sending due task cleanup-expired-files" in beat.log_text()
    assert any(line["cleanup"]["files_deleted"] == 1 for line in runs), runs

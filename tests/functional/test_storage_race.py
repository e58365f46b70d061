"""The same bytes uploaded by 8 threads through a real gunicorn while others delete jobs and files and run the
retention cleanup: no upload loses its blob, and ``fsck`` finds nothing wrong.

The API has a database, a storage root and a RabbitMQ vhost of this module's own (no
worker: a "finisher" thread runs each job's attempt by hand as a worker would, so that
retention, with a policy of 0 days, expires files as soon as their jobs are finished).
Two tenants upload the same image, each job with an image of its own beside it.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from config import Settings
from config.paths import PROJECT_ROOT
from harness.images import image_bytes
from harness.processes import VENV_BIN, ServiceProcess, start_api
from jobs.lifecycle import FileResult, Finishing, begin_attempt, finish_jobs
from jobs.retention import RetentionPolicy
from storage import Storage
from storage.maintenance.fsck import run_fsck
from storage.maintenance.retention import run_cleanup
from storage.tables import Job, StoredFile, Upload
from tests.conftest import VhostPool
from tests.helpers import LEASE, TestKey, add_key

UPLOADERS = 8
JOBS_EACH = 6
EXPIRE_AT_ONCE = RetentionPolicy(0)


@dataclass
class Stack:
    env: dict[str, str]
    url: str
    storage: Storage
    keys: list[TestKey]


@pytest.fixture(scope="module")
def stack(
    services_env: dict[str, str],
    module_database_url: str,
    vhost_pool: VhostPool,
    logs_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    vhost = vhost_pool.take()
    env = {
        **services_env,
        "DATABASE_URL": module_database_url,
        "STORAGE_ROOT": str(tmp_path_factory.mktemp("race-storage")),
        "CELERY_BROKER_URL": vhost,
    }
    settings = Settings.from_env(env)
    storage = Storage(settings.database_url, settings.storage_root)
    server: ServiceProcess | None = None
    try:
        keys = [add_key(storage, "race-a"), add_key(storage, "race-b")]
        server, url = start_api(env, logs_dir / "gunicorn-storage-race.log")
        yield Stack(env, url, storage, keys)
    finally:
        if server is not None:
            server.stop()
        storage.dispose()
        vhost_pool.give_back(vhost)


@dataclass
class Race:
    """What the threads did, shared between them."""

    stack: Stack
    uploading: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: list[tuple[str, TestKey]] = field(default_factory=list)
    shared_files: set[tuple[str, int]] = field(default_factory=set)  # (file_id, key index)
    outcomes: Counter[str] = field(default_factory=Counter)

    def note(self, what: str) -> None:
        with self.lock:
            self.outcomes[what] += 1


def upload(race: Race, index: int, shared: bytes) -> None:
    """One uploader: jobs of the shared image and one of its own, as one tenant or the other."""
    with requests.Session() as http:
        for n in range(JOBS_EACH):
            key_index = (index + n) % 2
            key = race.stack.keys[key_index]
            own = image_bytes(48, 48, seed=1000 + index * JOBS_EACH + n)
            parts = [("image", ("shared.png", shared, "image/png")), ("image", (f"own-{n}.png", own, "image/png"))]
            response = http.post(f"{race.stack.url}/api/v1/jobs", files=parts, headers=key.headers, timeout=60)
            assert response.status_code == 202, response.text
            body = response.json()
            with race.lock:
                race.jobs.append((body["job_id"], key))
                race.shared_files.add((body["files"][0]["file_id"], key_index))
            race.note("deduplicated" if body["files"][0]["deduplicated"] else "stored")


def delete(race: Race, seed: int) -> None:
    """One deleter: a job (mostly the newest), or the shared file as one of its tenants, until the uploads are over."""
    chance = random.Random(seed)
    with requests.Session() as http:
        while race.uploading.is_set():
            with race.lock:
                if not race.jobs:
                    target = None
                elif chance.random() < 0.7:  # mostly the newest: few jobs hold the shared file, so it is often freed
                    job_id, key = race.jobs.pop(-1 if chance.random() < 0.7 else chance.randrange(len(race.jobs)))
                    target = f"jobs/{job_id}"
                else:
                    file_id, key_index = chance.choice(sorted(race.shared_files))
                    key, target = race.stack.keys[key_index], f"files/{file_id}"
            if target is None:
                time.sleep(0.01)
                continue
            response = http.delete(f"{race.stack.url}/api/v1/{target}", headers=key.headers, timeout=60)
            assert response.status_code in (204, 404), (target, response.status_code, response.text)
            race.note(f"DELETE {target.split('/')[0]} {response.status_code}")


def finish(race: Race) -> None:
    """The worker's part: run each queued job's attempt to the end, so retention may expire its files."""
    while race.uploading.is_set():
        with race.lock:
            job_ids = [uuid.UUID(job_id) for job_id, _ in race.jobs[-4:]]
        for job_id in job_ids:
            with race.stack.storage.database.transaction() as session:
                run = begin_attempt(session, job_id, LEASE)
                if run is None:  # deleted, or finished already
                    continue
                results = [FileResult(item.upload_id, 48, 48, []) for item in run.pending]
                if finish_jobs(session, [Finishing(job_id, run.lease_token, results)]):
                    race.note("finished")


def clean(race: Race) -> None:
    """Beat's part: the retention cleanup, again and again."""
    while race.uploading.is_set():
        report = run_cleanup(race.stack.storage, EXPIRE_AT_ONCE)
        race.note(f"cleanup {report.status}")
        race.outcomes["expired"] += report.tombstoned


def run_race(stack: Stack, shared: bytes) -> Race:
    race = Race(stack)
    race.uploading.set()
    sides: list[Callable[[], None]] = [
        *(lambda i=i: delete(race, i) for i in range(3)),
        lambda: finish(race),
        lambda: clean(race),
    ]
    with ThreadPoolExecutor(max_workers=UPLOADERS + len(sides)) as pool:
        others = [pool.submit(side) for side in sides]
        try:
            for uploader in [pool.submit(upload, race, i, shared) for i in range(UPLOADERS)]:
                uploader.result(timeout=120)
        finally:
            race.uploading.clear()
        for other in others:
            other.result(timeout=60)
    return race


def test_uploads_of_the_same_bytes_racing_deletes_and_cleanups_lose_nothing(stack: Stack) -> None:
    shared = image_bytes(64, 64, seed=7)
    race = run_race(stack, shared)
    print(f"\nstorage race outcomes: {dict(sorted(race.outcomes.items()))}")
    assert race.outcomes["DELETE jobs 204"] > 0 and race.outcomes["DELETE files 204"] > 0, race.outcomes

    storage = stack.storage
    with storage.database.transaction() as session:
        # An unfinished job never refers to a tombstoned row: its bytes were never taken from under it.
        undercut = session.execute(
            select(Job.id, StoredFile.id)
            .join(Upload, Upload.job_id == Job.id)
            .join(StoredFile, StoredFile.id == Upload.file_id)
            .where(Job.finished_at.is_(None), StoredFile.deleted_at.is_not(None))
        ).all()
        live = session.execute(select(StoredFile.path, StoredFile.sha256).where(StoredFile.deleted_at.is_(None))).all()
    assert undercut == []
    for path, sha256 in live:
        assert hashlib.sha256(storage.blobs.path_of(path).read_bytes()).hexdigest() == sha256, path

    # Bytes a cleanup could not reclaim while a deletion held their lock wait, known to tombstones, for the next one.
    findings = run_fsck(storage).findings
    assert all(f.kind == "orphan_blob" and "tombstoned rows only" in f.detail for f in findings), findings
    run_cleanup(storage, EXPIRE_AT_ONCE)
    argv = [str(VENV_BIN / "python"), "-m", "storage.maintenance", "fsck"]
    fsck = subprocess.run(argv, env=stack.env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr

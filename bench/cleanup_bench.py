"""Time one retention cleanup of 10,000 expired files: ``python -m bench.cleanup_bench [--files N]``.

Builds a throwaway database and a temp storage root
holding N small blobs whose rows are used by N/10 jobs that finished 40 days ago, times
one full :func:`storage.maintenance.retention.run_cleanup`, and compares it with removing as many
files with ``os.unlink`` in a loop (what any cleanup has to pay at least). Drops both.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from config import Settings
from harness.services import create_database, drop_database
from jobs.retention import RetentionPolicy
from storage import Storage
from storage.blobs import blob_relpath
from storage.maintenance.retention import run_cleanup
from storage.tables import Job, StoredFile, Upload

BLOB_BYTES = 512
FILES_PER_JOB = 10


def write_blobs(root: Path, count: int) -> list[tuple[str, str]]:
    """``count`` random blobs at their content addresses under ``root``; returns (sha256, relpath) pairs."""
    blobs = []
    for _ in range(count):
        data = os.urandom(BLOB_BYTES)
        sha256 = hashlib.sha256(data).hexdigest()
        path = root / blob_relpath(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        blobs.append((sha256, blob_relpath(sha256)))
    return blobs


def seed_expired(storage: Storage, count: int) -> None:
    """``count`` stored files on disk, every one used only by jobs that finished 40 days ago."""
    blobs = write_blobs(storage.blobs.root, count)
    finished = datetime.now(UTC) - timedelta(days=40)
    files = [
        {"id": uuid.uuid4(), "sha256": sha, "size": BLOB_BYTES, "content_type": "image/png", "width": 8, "height": 8}
        | {"path": relpath, "created_at": finished}
        for sha, relpath in blobs
    ]
    jobs, uploads = [], []
    for start in range(0, count, FILES_PER_JOB):
        job_id = uuid.uuid4()
        batch = files[start : start + FILES_PER_JOB]
        jobs.append(
            {"id": job_id, "status": "succeeded", "model": "default", "conf": 0.25, "iou": 0.7}
            | {"total_files": len(batch), "done_files": len(batch), "created_at": finished, "finished_at": finished}
        )
        uploads += [
            {"id": uuid.uuid4(), "job_id": job_id, "file_id": f["id"], "position": i, "filename": f"{i}.png"}
            | {"deduplicated": False}
            for i, f in enumerate(batch)
        ]
    with storage.database.transaction() as session:
        session.execute(insert(StoredFile), files)
        session.execute(insert(Job), jobs)
        session.execute(insert(Upload), uploads)


def time_unlink_loop(root: Path, count: int) -> float:
    paths = [root / relpath for _, relpath in write_blobs(root, count)]
    started = time.perf_counter()
    for path in paths:
        os.unlink(path)
    return time.perf_counter() - started


def run(files: int = 10_000) -> dict[str, float]:
    """Seed ``files`` expired files in a throwaway database and storage root, time one cleanup and the baseline."""
    name = f"yolo_bench_{uuid.uuid4().hex[:10]}"
    database_url = create_database(name)
    with tempfile.TemporaryDirectory(prefix="yolo-cleanup-bench-") as tmp:
        storage = Storage(database_url, Path(tmp) / "store")
        policy = RetentionPolicy(Settings.from_env().retention.days)
        try:
            seed_expired(storage, files)
            report = run_cleanup(storage, policy)
            baseline = time_unlink_loop(Path(tmp) / "baseline", files)
        finally:
            storage.dispose()
            drop_database(name)
    if (report.status, report.files_deleted) != ("done", files):
        raise RuntimeError(f"the cleanup did not delete every expired file: {report.as_dict()}")
    seconds = report.duration_seconds
    return {
        f"cleanup of {files} expired files (s)": seconds,
        "cleanup (files/s)": files / seconds,
        f"baseline: os.unlink loop over {files} files (s)": baseline,
        "baseline (files/s)": files / baseline,
        "cleanup time / baseline time": seconds / baseline,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cleanup_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="expired files to create (default 10000)")
    for label, value in run(parser.parse_args().files).items():
        print(f"{label:<45} {value:>12.3f}")


if __name__ == "__main__":
    main()

"""Jobs of drawn shapes whose results a test writes itself, as a worker would: a file at a time while the job runs,
so a test decides when each card of the job page should fill in (no worker, no model, nothing to wait for)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import joinedload

from jobs.lifecycle import FileResult, JobParams, JobRun, begin_attempt, cancel_job, create_job, record_results
from storage import Storage
from storage.tables import Result, Upload
from tests.helpers import LEASE, complete_job, create_queued_job, new_upload
from training.shapes import Shape, render_sample

SHAPES_SEED = 7


@dataclass(frozen=True)
class ShapesJob:
    """A job of drawn-shapes JPEGs: its id, each image's shapes (its detections, by position), the attempt that
    runs it (None until begun)."""

    job_id: uuid.UUID
    shapes: list[list[Shape]]
    run: JobRun | None = None


def detections(shapes: Sequence[Shape]) -> list[dict[str, Any]]:
    """The shapes as a worker would report them found."""
    corners = ("x1", "y1", "x2", "y2")
    return [
        {"name": s.name, "class": s.cls, "confidence": 0.9, "box": dict(zip(corners, s.box, strict=True))}
        for s in shapes
    ]


def shapes_job(storage: Storage, tenant_id: uuid.UUID, count: int, first: int = 0) -> ShapesJob:
    """A queued job of ``count`` drawn-shapes JPEGs (images ``first``… of the shapes data set)."""
    samples = [render_sample(SHAPES_SEED, index) for index in range(first, first + count)]
    images = []
    for image, _ in samples:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        images.append(buffer.getvalue())
    job_id = create_queued_job(storage, *images, params=JobParams(model="shapes", imgsz=320), tenant_id=tenant_id)
    return ShapesJob(job_id, [shapes for _, shapes in samples])


def begin(storage: Storage, job: ShapesJob) -> ShapesJob:
    """The job running, as a worker's attempt would begin it."""
    with storage.database.transaction() as session:
        run = begin_attempt(session, job.job_id, LEASE)
    assert run is not None, f"job {job.job_id} cannot begin an attempt"
    return ShapesJob(job.job_id, job.shapes, run)


def land(storage: Storage, job: ShapesJob, *positions: int) -> None:
    """Write the results of the files at ``positions`` as the running attempt would: their shapes found."""
    assert job.run is not None
    with storage.database.transaction() as session:
        uploads = session.scalars(
            select(Upload)
            .where(Upload.job_id == job.job_id, Upload.position.in_(positions))
            .options(joinedload(Upload.file))
        ).all()
        results = [FileResult(u.id, u.file.width, u.file.height, detections(job.shapes[u.position])) for u in uploads]
        assert record_results(session, job.job_id, job.run.lease_token, results, LEASE) is not None


def cancel(storage: Storage, job: ShapesJob) -> None:
    """Cancel the job as the API would (keeping the results it has)."""
    with storage.database.transaction() as session:
        assert cancel_job(session, job.job_id)


def backdate_results(storage: Storage, job_id: uuid.UUID, seconds: float = 60) -> None:
    """Make the job's results as old as if written ``seconds`` ago (older than any poll's overlap)."""
    with storage.database.transaction() as session:
        session.execute(
            update(Result)
            .where(Result.job_id == job_id)
            .values(created_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 0, seconds))
        )


def finish(storage: Storage, job: ShapesJob) -> None:
    """Run the queued job to ``succeeded`` in one attempt, every image's shapes found."""
    complete_job(
        storage, job.job_id, lambda u: FileResult(u.id, u.file.width, u.file.height, detections(job.shapes[u.position]))
    )


def named_job(storage: Storage, tenant_id: uuid.UUID, files: Sequence[tuple[str, bytes]]) -> uuid.UUID:
    """A queued job of ``tenant_id`` whose files have these names (the shapes model asked for)."""
    uploads = [new_upload(storage.blobs, data, name) for name, data in files]
    with storage.database.transaction() as session:
        return create_job(session, storage.blobs, JobParams(model="shapes"), uploads, tenant_id).id

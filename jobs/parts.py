"""Large uploads split into parts that any worker may take, each under a lease: planning, leases and ends.

Why: a two-hour video or a 100-megapixel image is far more work than one task should hold. A worker that
dies an hour in would lose the hour, and one GPU would do what every GPU could share. So a job with such an
upload runs it as *parts* (``job_parts``): a video's segments (its frames by timestamp, ``video.sampling``),
an image's groups of tiles (``inference.tiles``), and, where a last step needs all of them, one ``finish``
part (tracks across the whole video, or merging the boxes of many tile groups).

- **Planned** in the transaction that creates the job (:func:`plan_parts`), from what was probed when the
  file was stored: a job with parts runs every one of its uploads as parts (a plain image as one ``tiles``
  part of no tiles: the whole image), so one rule ends it.
- **Dispatched** by the job's detect task, which sends one ``tasks.parts.run_part`` message per part (IDs only)
  and leaves the job running without a lease of its own: its parts hold theirs.
- **Run** under a lease (:func:`begin_part`), fenced like a job's: each write names the part's token and needs
  the job still running, so a cancelled job's parts stop at their next batch and a part taken over by another
  attempt never writes again. Beat's reaper re-sends a part whose lease expired, or that was not sent.
- **Ended** (:func:`end_part`) in a transaction that locks the job's row and decides, in PostgreSQL, what
  follows: the upload's ``finish`` part is queued once its other parts ended, or the upload's result row is
  written; and the job succeeds when every upload has its result. No Celery chord: a lost message or a dead
  worker cannot leave a job waiting for ever.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased
from sqlalchemy.types import DateTime

from inference.tiles import merge, plan_tiles
from jobs.lifecycle import MediaParams, fail_job, kept_message
from storage.tables import Job, JobPart, Result, StoredFile, Upload
from video.sampling import Window, window_of
from webhooks.outbox import record_job_finished

SEGMENT, TILES, FINISH = "segment", "tiles", "finish"
# A part whose attempts keep dying (a stretch of video that kills its worker) ends failed after this many.
MAX_PART_ATTEMPTS = 10
NEVER = literal("-infinity").cast(DateTime(timezone=True))
# Boxes of neighbouring tiles are merged when they overlap this much (as SAHI's postprocess does).
TILE_MERGE_IOU = 0.5
# What a part's row says of its cut when it is not a segment, or not a group of tiles (every row names them all).
NO_CUT: dict[str, Any] = {"start_seconds": None, "end_seconds": None, "tiles": None, "units_expected": None}


@dataclass(frozen=True)
class PartPlan:
    """How the parts of a new job are cut: the settings, and the size its model runs at (a tile's side)."""

    segment_seconds: float
    tiles_per_part: int
    tile_overlap: float
    tile_side: int


@dataclass(frozen=True)
class PartRun:
    """What a worker needs to run one part: its lease, its job's parameters and its upload's file."""

    part_id: uuid.UUID
    job_id: uuid.UUID
    upload_id: uuid.UUID
    token: uuid.UUID
    kind: str
    number: int
    attempts: int
    model: str
    conf: float
    iou: float
    imgsz: int | None
    media: MediaParams
    path: str
    sha256: str
    width: int | None
    height: int | None
    video: dict[str, Any] | None
    start_seconds: float | None
    end_seconds: float | None
    tiles: list[list[int]] | None


def video_window(probe: dict[str, Any], media: MediaParams, segment_seconds: float) -> Window:
    """The frames a job samples of a video (its probe): the one rule planning and the segments share."""
    return window_of(probe["duration"], media.start_seconds, media.end_seconds, media.sample_fps, segment_seconds)


def within(window: Window, start: float, end: float, rate: float) -> int:
    """The frames ``window`` samples in ``[start, end)`` (a segment of it: whole slots), estimated at ``rate``."""
    return replace(window, start=start, end=end).estimated_frames(rate)


def is_video(file: StoredFile) -> bool:
    return bool(file.media) and file.media.get("kind") == "video"


def plan_parts(session: Session, job: Job, media: MediaParams, plan: PartPlan) -> bool:
    """Insert the parts of ``job`` (its uploads and their files loaded) when any upload needs them: a video, or
    an image that runs as tiles. Returns whether the job has parts. A segment's frames are estimated from the
    probe's average rate until it lists its own; a job with videos counts them (:func:`count_frames`)."""
    cuts: dict[uuid.UUID, list[tuple[str, dict[str, Any]]]] = {}
    for upload in job.uploads:
        file = upload.file
        if file is None:
            continue
        if is_video(file):
            assert file.media is not None
            window = video_window(file.media, media, plan.segment_seconds)
            rate = file.media["fps"]
            cuts[upload.id] = [
                (SEGMENT, {"start_seconds": t0, "end_seconds": t1, "units_expected": within(window, t0, t1, rate)})
                for t0, t1 in window.segments()
            ]
            continue
        tiles = plan_tiles(file.width or 0, file.height or 0, plan.tile_side, media.tiles, plan.tile_overlap)
        groups = [tiles[i : i + plan.tiles_per_part] for i in range(0, len(tiles), plan.tiles_per_part)]
        cuts[upload.id] = [
            (TILES, {"tiles": [list(t) for t in group], "units_expected": len(group)}) for group in groups
        ] or [(TILES, {"units_expected": 1})]
    if not any(kind == SEGMENT or values.get("tiles") for parts in cuts.values() for kind, values in parts):
        return False  # plain images only: the job runs in the pipeline, without parts
    rows = [
        {
            "id": uuid.uuid4(),
            "job_id": job.id,
            "upload_id": upload_id,
            "kind": kind,
            "number": number,
            **NO_CUT,
            **values,
        }
        for upload_id, parts in cuts.items()
        for number, (kind, values) in enumerate(parts)
    ]
    session.execute(JobPart.__table__.insert(), rows)
    count_frames(session, job.id)
    return True


def has_parts(session: Session, job_id: uuid.UUID) -> bool:
    return session.scalar(select(select(JobPart.id).where(JobPart.job_id == job_id).exists())) or False


def parts_of(session: Session, upload_ids: Sequence[uuid.UUID]) -> list[JobPart]:
    """The parts of these uploads, each upload's in order, its finish part last (a page of a job's files shows
    its segments)."""
    if not upload_ids:
        return []
    query = (
        select(JobPart)
        .where(JobPart.upload_id.in_(upload_ids))
        .order_by(JobPart.upload_id, JobPart.kind == FINISH, JobPart.number)
    )
    return list(session.scalars(query))


def parts_to_send(session: Session, job_id: uuid.UUID) -> list[uuid.UUID]:
    """The job's parts that no message carries yet (never sent, or taken back by :func:`reset_parts`)."""
    query = select(JobPart.id).where(
        JobPart.job_id == job_id, JobPart.status == "queued", JobPart.enqueued_at.is_(None)
    )
    return list(session.scalars(query.order_by(JobPart.kind, JobPart.number)))


def mark_part_sent(session: Session, part_id: uuid.UUID, task_id: str) -> None:
    session.execute(update(JobPart).where(JobPart.id == part_id).values(enqueued_at=func.now(), task_id=task_id))


def release_job_lease(session: Session, job_id: uuid.UUID, token: uuid.UUID) -> None:
    """The job's own lease, once its parts are sent: its parts hold theirs, and the reaper watches those."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_token == token, Job.status == "running")
        .values(lease_token=None, lease_expires_at=None)
    )


def resendable_parts(session: Session, lease: timedelta, limit: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Parts of running jobs that nothing is working on, as ``(job_id, part_id)``, locked until commit: running
    with an expired lease, or queued, not sent within a lease period, and of a job none of whose parts ran
    within it."""
    expired = and_(JobPart.status == "running", func.coalesce(JobPart.lease_expires_at, NEVER) < func.now())
    # A queued part waits behind the others while its job's parts are being taken: re-sent only once none of its
    # job's parts has run within a lease period (its message lost, or the queue purged), so a long video waiting
    # for a worker does not gain a message per part every lease period.
    sibling = aliased(JobPart)
    moving = (
        select(sibling.id)
        .where(
            sibling.job_id == JobPart.job_id,
            or_(
                and_(sibling.status == "running", sibling.lease_expires_at >= func.now()),
                sibling.finished_at >= func.now() - lease,
            ),
        )
        .exists()
    )
    unsent = and_(JobPart.status == "queued", func.coalesce(JobPart.enqueued_at, NEVER) < func.now() - lease, ~moving)
    query = (
        select(JobPart.job_id, JobPart.id)
        .join(Job, Job.id == JobPart.job_id)
        .where(Job.status == "running", or_(expired, unsent))
        .order_by(JobPart.job_id, JobPart.number)
        .limit(limit)
        .with_for_update(of=JobPart, skip_locked=True)
    )
    return [(job_id, part_id) for job_id, part_id in session.execute(query)]


def begin_part(session: Session, part_id: uuid.UUID, lease: timedelta) -> PartRun | None:
    """Take the part's lease: ``None`` when its job is not running, the part ended, or another live attempt holds it."""
    takeable = or_(
        JobPart.status == "queued",
        and_(JobPart.status == "running", func.coalesce(JobPart.lease_expires_at, NEVER) < func.now()),
    )
    statement = (
        update(JobPart)
        .where(JobPart.id == part_id, takeable, _job_running())
        .values(
            status="running",
            attempts=JobPart.attempts + 1,
            lease_token=func.gen_random_uuid(),
            lease_expires_at=func.now() + lease,
        )
        .returning(JobPart.lease_token, JobPart.attempts)
    )
    began = session.execute(statement).first()
    if began is None:
        return None
    part = session.get_one(JobPart, part_id)
    row = session.execute(
        select(Job, StoredFile)
        .join(Upload, Upload.job_id == Job.id)
        .join(StoredFile, StoredFile.id == Upload.file_id)
        .where(Upload.id == part.upload_id)
    ).first()
    if row is None:  # the upload's file was deleted meanwhile: nothing to run
        return None
    job, file = row
    media = MediaParams(job.sample_fps, job.start_seconds, job.end_seconds, job.track, job.tiles)
    return PartRun(
        part.id,
        part.job_id,
        part.upload_id,
        began.lease_token,
        part.kind,
        part.number,
        began.attempts,
        job.model,
        job.conf,
        job.iou,
        job.imgsz,
        media,
        file.path,
        file.sha256,
        file.width,
        file.height,
        file.media,
        part.start_seconds,
        part.end_seconds,
        part.tiles,
    )


def _holds(run: PartRun) -> Any:
    return and_(
        JobPart.id == run.part_id, JobPart.lease_token == run.token, JobPart.status == "running", _job_running()
    )


def _job_running() -> Any:
    """The part's job is running: no part of a cancelled or finished job begins or writes."""
    return select(Job.id).where(Job.id == JobPart.job_id, Job.status == "running").exists()


def renew_part(session: Session, run: PartRun, lease: timedelta, **values: Any) -> bool:
    """Extend the part's lease (and set ``values`` on it): False when it no longer holds the part, or its job
    stopped running (cancelled). Locks the part's row until commit."""
    statement = update(JobPart).where(_holds(run)).values(lease_expires_at=func.now() + lease, **values)
    return session.execute(statement.returning(JobPart.id)).first() is not None


def count_frames(session: Session, job_id: uuid.UUID) -> None:
    """The job's frame counts from its segments: to do (exact where listed, estimated elsewhere), analysed, not
    decodable. A job without segments keeps no count of frames."""
    totals = (
        select(
            func.sum(JobPart.units_expected),  # NULL for a job without segments: it counts no frames
            func.coalesce(func.sum(JobPart.units_done), 0),
            func.coalesce(func.sum(JobPart.units_failed), 0),
        )
        .where(JobPart.job_id == job_id, JobPart.kind == SEGMENT)
        .subquery()
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            total_frames=select(totals.c[0]).scalar_subquery(),
            done_frames=select(totals.c[1]).scalar_subquery(),
            failed_frames=select(totals.c[2]).scalar_subquery(),
        )
    )


@dataclass(frozen=True)
class PartEnd:
    """How a part ended: its units, what it found (a tiles part), and its error; ``failed``: given up, its units
    not done counted as failed."""

    units_done: int = 0
    units_failed: int = 0
    detections: list[dict[str, Any]] | None = None
    error: str | None = None
    failed: bool = False


def end_part(session: Session, run: PartRun, end: PartEnd) -> tuple[bool, list[uuid.UUID]]:
    """End the part (fenced by its lease) and settle its upload and job: ``(ended, parts to send)``.

    The job's row is locked first, so the ends of two parts of one upload are decided one after the other and
    exactly one of them queues the ``finish`` part or writes the upload's result.
    """
    if session.execute(select(Job.id).where(Job.id == run.job_id).with_for_update()).first() is None:
        return False, []
    if end.failed:  # given up: what it wrote stays, and every frame it did not is counted as not analysed
        counts: dict[str, Any] = {
            "units_failed": func.greatest(func.coalesce(JobPart.units_expected, 0) - JobPart.units_done, 0)
        }
    else:
        counts = {"units_done": end.units_done, "units_failed": end.units_failed, "detections": end.detections}
    statement = (
        update(JobPart)
        .where(_holds(run))
        .values(
            status="failed" if end.failed else "done",
            finished_at=func.now(),
            error=kept_message(end.error) if end.error else None,
            lease_token=None,
            lease_expires_at=None,
            **counts,
        )
        .returning(JobPart.id)
    )
    if session.execute(statement).first() is None:
        return False, []
    if run.kind == SEGMENT:
        count_frames(session, run.job_id)
    return True, settle_upload(session, run.job_id, run.upload_id)


def settle_upload(session: Session, job_id: uuid.UUID, upload_id: uuid.UUID) -> list[uuid.UUID]:
    """What follows the end of one of the upload's parts, with the job's row locked: nothing while others run; the
    ``finish`` part once all of them ended and the upload needs one (returned, to send after commit); else the
    upload's result, and the job's success when every upload has one."""
    parts = list(session.scalars(select(JobPart).where(JobPart.upload_id == upload_id).order_by(JobPart.number)))
    if any(p.finished_at is None for p in parts):
        return []
    job = session.get_one(Job, job_id)
    work = [p for p in parts if p.kind != FINISH]
    finish = next((p for p in parts if p.kind == FINISH), None)
    video = bool(work) and work[0].kind == SEGMENT
    needs_finish = (video and job.track) or (not video and len(work) > 1)
    if needs_finish and finish is None:
        finish_id = uuid.uuid4()
        session.add(JobPart(id=finish_id, job_id=job_id, upload_id=upload_id, kind=FINISH, number=0))
        session.flush()
        return [finish_id]
    if finish is not None and finish.status == "failed":
        fail_job(session, job_id, "part_failed", finish.error or "the last step of an upload failed")
        return []
    _write_result(session, job_id, upload_id, work, finish)
    end_if_complete(session, job_id)
    return []


def _write_result(
    session: Session, job_id: uuid.UUID, upload_id: uuid.UUID, work: Sequence[JobPart], finish: JobPart | None
) -> None:
    """The upload's one ``results`` row from its parts: a video's says what could not be analysed (its frames are in
    ``frame_results``); an image's holds its boxes, merged across tile groups by the finish part when it had one."""
    if work and work[0].kind == SEGMENT:
        file = session.scalar(
            select(StoredFile).join(Upload, Upload.file_id == StoredFile.id).where(Upload.id == upload_id)
        )
        width, height = (file.width, file.height) if file is not None else (None, None)
        detections: list[dict[str, Any]] = []
        error = video_error(work)
    else:  # an image: one part, or the finish part that merged its tile groups
        source = finish if finish is not None else work[0]
        detections, error = source.detections or [], source.error
        width, height = (None, None) if error else _image_size(session, upload_id)
    values = {
        "upload_id": upload_id,
        "job_id": job_id,
        "width": width,
        "height": height,
        "detections": detections,
        "error": kept_message(error) if error else None,
    }
    statement = insert(Result).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[Result.upload_id],
            set_={k: statement.excluded[k] for k in ("width", "height", "detections", "error")},
        )
    )


def _image_size(session: Session, upload_id: uuid.UUID) -> tuple[int | None, int | None]:
    row = session.execute(
        select(StoredFile.width, StoredFile.height)
        .join(Upload, Upload.file_id == StoredFile.id)
        .where(Upload.id == upload_id)
    ).first()
    return (row.width, row.height) if row is not None else (None, None)


def video_error(segments: Sequence[JobPart]) -> str | None:
    """What a video's result says of the frames its segments could not analyse (None when every frame was)."""
    failed = sum(p.units_failed for p in segments)
    if not failed:
        return None
    expected = sum(p.units_expected or 0 for p in segments)
    said = [p.error for p in segments if p.error]
    return f"{failed} of {expected} sampled frames could not be analysed: " + "; ".join(said)


def merged_detections(session: Session, upload_id: uuid.UUID) -> list[dict[str, Any]]:
    """The boxes of every tile group of an image, merged across the groups' borders (the finish part's work)."""
    groups = session.scalars(select(JobPart.detections).where(JobPart.upload_id == upload_id, JobPart.kind == TILES))
    return merge([d for group in groups for d in (group or [])], TILE_MERGE_IOU)


def end_if_complete(session: Session, job_id: uuid.UUID) -> bool:
    """End the running job as succeeded when every upload with a file has its result (its row locked by the
    caller); records its webhook. Returns whether it ended."""
    missing = (
        select(Upload.id)
        .outerjoin(Result, Result.upload_id == Upload.id)
        .where(Upload.job_id == job_id, Upload.file_id.is_not(None), Result.upload_id.is_(None))
        .exists()
    )
    done = select(func.count()).select_from(Result).where(Result.job_id == job_id).scalar_subquery()
    statement = (
        update(Job)
        .where(Job.id == job_id, Job.status == "running", ~missing)
        .values(
            status="succeeded",
            done_files=done,
            finished_at=func.now(),
            error_code=None,
            error_message=None,
            lease_token=None,
            lease_expires_at=None,
        )
        .returning(Job.id)
    )
    if session.execute(statement).first() is None:
        return False
    record_job_finished(session, job_id)
    return True


def reset_parts(session: Session, job_id: uuid.UUID) -> None:
    """A retried job's parts that did not end done run again from their next message (their frames written
    stay written: a segment skips them); a finish part is queued again once its upload's other parts ended."""
    session.execute(delete(JobPart).where(JobPart.job_id == job_id, JobPart.kind == FINISH, JobPart.status != "done"))
    session.execute(
        update(JobPart)
        .where(JobPart.job_id == job_id, JobPart.status != "done")
        .values(
            status="queued",
            attempts=0,
            lease_token=None,
            lease_expires_at=None,
            enqueued_at=None,
            task_id=None,
            units_failed=0,
            error=None,
            finished_at=None,
        )
    )
    count_frames(session, job_id)

"""Parts of large uploads against real PostgreSQL: planning, leases fenced like a job's, and the end decided once.

A video job is planned as segments from its file's probe, each begun under a lease of its own; the end
of the last segment queues the upload's finish part (tracks) or writes its result, and the job succeeds
in the transaction that ends its last part, exactly once.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from accounts.keys import ensure_tenant
from harness.images import image_bytes
from jobs.lifecycle import MediaParams, cancel_job, retry_job
from jobs.parts import (
    FINISH,
    SEGMENT,
    TILES,
    PartEnd,
    PartPlan,
    begin_part,
    end_part,
    parts_to_send,
    plan_parts,
    renew_part,
    resendable_parts,
    reset_parts,
    video_error,
)
from jobs.queries import find_job
from storage import Storage
from storage.tables import Job, JobPart, Result, StoredFile, Upload, WebhookDelivery
from tests.helpers import LEASE, create_queued_job

PLAN = PartPlan(segment_seconds=10.0, tiles_per_part=4, tile_overlap=0.2, tile_side=384)
PROBE = {"kind": "video", "container": "mp4", "codec": "h264", "width": 320, "height": 180, "rotation": 0}


def video_job(store: Storage, media: MediaParams, seconds: float = 25.0, fps: float = 10.0, images: int = 1) -> Job:
    """A queued job whose first file is made a video of ``seconds`` (its probe set on the row), with its parts
    planned as the API plans them."""
    with store.database.transaction() as session:
        tenant_id = ensure_tenant(session, "video").id
    job_id = create_queued_job(store, *[image_bytes(seed=i) for i in range(images)], tenant_id=tenant_id)
    with store.database.transaction() as session:
        first = session.scalar(select(Upload).where(Upload.job_id == job_id, Upload.position == 0))
        assert first is not None
        probe = {**PROBE, "fps": fps, "duration": seconds, "frames": round(seconds * fps)}
        shown = {"media": probe, "width": PROBE["width"], "height": PROBE["height"]}
        session.execute(update(StoredFile).where(StoredFile.id == first.file_id).values(**shown))
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(sample_fps=media.sample_fps, track=media.track, status="running", enqueued_at=func.now())
        )
    with store.database.transaction() as session:
        job = find_job(session, job_id, None)
        assert job is not None
        assert plan_parts(session, job, media, PLAN)
    return job


def parts(store: Storage, job_id: uuid.UUID, kind: str | None = None) -> list[JobPart]:
    with store.database.transaction() as session:
        query = select(JobPart).where(JobPart.job_id == job_id).order_by(JobPart.kind, JobPart.number)
        if kind is not None:
            query = query.where(JobPart.kind == kind)
        found = list(session.scalars(query))
        session.expunge_all()
        return found


def run_part(store: Storage, part_id: uuid.UUID, end: PartEnd, **values: Any) -> list[uuid.UUID]:
    """Begin the part, set ``values`` on it, end it; the parts its end queued."""
    with store.database.transaction() as session:
        run = begin_part(session, part_id, LEASE)
        assert run is not None
        if values:
            assert renew_part(session, run, LEASE, **values)
    with store.database.transaction() as session:
        ended, queued = end_part(session, run, end)
        assert ended
        return queued


def job_row(store: Storage, job_id: uuid.UUID) -> Job:
    with store.database.transaction() as session:
        job = session.get_one(Job, job_id)
        session.expunge(job)
        return job


def test_a_video_is_planned_as_segments_of_whole_slots_and_counts_its_frames(store: Storage) -> None:
    job = video_job(store, MediaParams(sample_fps=5.0), seconds=25.0)
    segments = parts(store, job.id, SEGMENT)
    assert [(p.start_seconds, p.end_seconds) for p in segments] == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert job_row(store, job.id).total_frames == 125  # 25 s sampled at 5 fps
    assert not parts(store, job.id, FINISH)


def test_images_alone_get_no_parts_and_images_beside_a_video_get_one_each(store: Storage) -> None:
    plain = create_queued_job(store, image_bytes(seed=1))
    with store.database.transaction() as session:
        job = find_job(session, plain, None)
        assert job is not None
        assert not plan_parts(session, job, MediaParams(), PLAN)
    mixed = video_job(store, MediaParams(), images=2)
    whole = parts(store, mixed.id, TILES)
    assert len(whole) == 1 and whole[0].tiles is None


def test_a_part_runs_under_one_lease_and_a_cancelled_job_fences_it(store: Storage) -> None:
    job = video_job(store, MediaParams())
    first = parts(store, job.id, SEGMENT)[0]
    with store.database.transaction() as session:
        run = begin_part(session, first.id, LEASE)
        assert run is not None and run.kind == SEGMENT and run.video is not None
        assert begin_part(session, first.id, LEASE) is None  # held
    with store.database.transaction() as session:
        assert cancel_job(session, job.id)
    with store.database.transaction() as session:
        assert not renew_part(session, run, LEASE, units_done=3)
        assert end_part(session, run, PartEnd(units_done=3)) == (False, [])
    with store.database.transaction() as session:
        assert begin_part(session, parts(store, job.id, SEGMENT)[1].id, LEASE) is None


def test_the_last_segment_queues_the_tracks_and_the_finish_ends_the_job_once(store: Storage) -> None:
    job = video_job(store, MediaParams(sample_fps=5.0, track=True), seconds=25.0)
    segments = parts(store, job.id, SEGMENT)
    assert run_part(store, segments[0].id, PartEnd(units_done=50), units_expected=50) == []
    assert run_part(store, segments[2].id, PartEnd(units_done=25), units_expected=25) == []
    queued = run_part(store, segments[1].id, PartEnd(units_done=50), units_expected=50)
    assert len(queued) == 1 and parts(store, job.id, FINISH)[0].id == queued[0]
    assert job_row(store, job.id).status == "running"
    assert run_part(store, queued[0], PartEnd(units_done=125)) == []
    ended = job_row(store, job.id)
    assert (ended.status, ended.done_files, ended.total_frames, ended.done_frames) == ("succeeded", 1, 125, 125)
    with store.database.transaction() as session:
        result = session.scalar(select(Result).where(Result.job_id == job.id))
        assert result is not None and result.error is None and (result.width, result.height) == (320, 180)


def test_frames_that_could_not_be_decoded_are_counted_and_named(store: Storage) -> None:
    job = video_job(store, MediaParams(), seconds=10.0)
    (segment,) = parts(store, job.id, SEGMENT)
    error = "frames 40-49 could not be decoded (10 frames)"
    run_part(store, segment.id, PartEnd(units_done=90, units_failed=10, error=error), units_expected=100)
    ended = job_row(store, job.id)
    assert (ended.status, ended.done_frames, ended.failed_frames, ended.total_frames) == ("succeeded", 90, 10, 100)
    with store.database.transaction() as session:
        result = session.scalar(select(Result).where(Result.job_id == job.id))
        assert result is not None
        assert result.error == f"10 of 100 sampled frames could not be analysed: {error}"
    assert video_error([]) is None


def test_the_reaper_finds_expired_and_unsent_parts_of_running_jobs_only(store: Storage) -> None:
    job = video_job(store, MediaParams(), seconds=25.0)
    first, second, third = parts(store, job.id, SEGMENT)
    with store.database.transaction() as session:
        assert set(parts_to_send(session, job.id)) == {first.id, second.id, third.id}
        session.execute(update(JobPart).where(JobPart.job_id == job.id).values(enqueued_at=func.now()))
        run = begin_part(session, first.id, timedelta(seconds=-1))  # a lease already expired
        assert run is not None
        session.execute(
            update(JobPart).where(JobPart.id == second.id).values(enqueued_at=func.now() - timedelta(hours=1))
        )
    with store.database.transaction() as session:
        assert {part for _, part in resendable_parts(session, LEASE, 10)} == {first.id, second.id}
        session.execute(update(JobPart).where(JobPart.id == third.id).values(status="done", finished_at=func.now()))
    with store.database.transaction() as session:  # a part ran just now: the queue is moving, its message waits
        assert {part for _, part in resendable_parts(session, LEASE, 10)} == {first.id}
        cancel_job(session, job.id)
    with store.database.transaction() as session:
        assert resendable_parts(session, LEASE, 10) == []


def test_a_retried_job_runs_its_unfinished_parts_again_and_keeps_the_done_ones(store: Storage) -> None:
    job = video_job(store, MediaParams(track=True), seconds=25.0)
    first, second, _ = parts(store, job.id, SEGMENT)
    run_part(store, first.id, PartEnd(units_done=100), units_expected=100)
    with store.database.transaction() as session:
        assert begin_part(session, second.id, LEASE) is not None
        assert cancel_job(session, job.id)
        assert retry_job(session, job.id)
        reset_parts(session, job.id)
    again = {p.number: p for p in parts(store, job.id, SEGMENT)}
    assert again[0].status == "done" and again[1].status == "queued" and again[1].attempts == 0
    with store.database.transaction() as session:
        assert set(parts_to_send(session, job.id)) == {again[1].id, again[2].id}


def test_a_webhook_is_recorded_when_the_last_part_ends_the_job(store: Storage) -> None:
    job = video_job(store, MediaParams(), seconds=5.0)
    with store.database.transaction() as session:
        session.execute(update(Job).where(Job.id == job.id).values(callback_url="https://example.com/hook"))
    (segment,) = parts(store, job.id, SEGMENT)
    run_part(store, segment.id, PartEnd(units_done=50), units_expected=50)
    with store.database.transaction() as session:
        count = session.scalar(select(func.count()).where(WebhookDelivery.job_id == job.id))
        assert count == 1


def test_a_segment_given_up_counts_the_frames_it_did_not_write_as_not_analysed(store: Storage) -> None:
    job = video_job(store, MediaParams(), seconds=10.0)
    (segment,) = parts(store, job.id, SEGMENT)
    given_up = PartEnd(failed=True, error="the frames from 0 s to 10 s: gave up after 10 attempts")
    run_part(store, segment.id, given_up, units_expected=100, units_done=40)
    (ended_part,) = parts(store, job.id, SEGMENT)
    assert (ended_part.status, ended_part.units_done, ended_part.units_failed) == ("failed", 40, 60)
    ended = job_row(store, job.id)
    assert (ended.status, ended.done_frames, ended.failed_frames) == ("succeeded", 40, 60)

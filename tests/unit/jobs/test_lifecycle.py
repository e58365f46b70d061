"""The job state machine against real PostgreSQL: every state change of ``jobs/lifecycle.py``, one at a time.

A job is created ``queued`` with its uploads, marked enqueued once its task is sent (or
withdrawn when it could not be), runs attempts that each hold a lease and write results
fenced by its token, and ends ``succeeded``, ``failed`` or ``cancelled``; the reaper finds
the unfinished jobs nothing is working on.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from accounts.keys import ensure_tenant
from harness.costs import counting_statements
from harness.images import image_bytes
from jobs.lifecycle import (
    ERROR_MESSAGE_CHARS,
    FileResult,
    Finishing,
    JobParams,
    JobRun,
    WorkItem,
    active_jobs,
    begin_attempt,
    begin_attempts,
    cancel_job,
    create_job,
    exception_message,
    fail_job,
    finish_jobs,
    job_status,
    kept_message,
    mark_enqueued,
    record_results,
    release_attempt,
    renew_lease,
    renew_leases,
    resendable_jobs,
    retry_job,
    tenant_has_file,
    withdraw_job,
)
from jobs.queries import find_job
from storage import Storage
from storage.tables import Job, Result, StoredFile, Upload
from tests.helpers import LEASE, complete_job, create_queued_job, job_state, new_upload

CIRCLE = [{"name": "circle", "class": 0, "confidence": 0.9, "box": {"x1": 1.0, "y1": 2.0, "x2": 3.0, "y2": 4.0}}]


def count(store: Storage, table: type[Any], *where: Any) -> int:
    with store.database.transaction() as session:
        return session.scalar(select(func.count()).select_from(table).where(*where)) or 0


def result_for(upload: Upload, detections: list[dict[str, Any]] | None = None) -> FileResult:
    return FileResult(upload.id, upload.file.width, upload.file.height, detections or [])


def attempt(store: Storage, job_id: uuid.UUID) -> JobRun:
    """Begin an attempt that must be granted."""
    with store.database.transaction() as session:
        run = begin_attempt(session, job_id, LEASE)
    assert run is not None, f"job {job_id} refused an attempt"
    return run


def record(store: Storage, run: JobRun, results: list[FileResult]) -> int | None:
    with store.database.transaction() as session:
        return record_results(session, run.job_id, run.lease_token, results, LEASE)


def finish(store: Storage, run: JobRun, results: list[FileResult]) -> bool:
    """End the attempt's job as succeeded with its last ``results``; whether it ended."""
    with store.database.transaction() as session:
        return finish_jobs(session, [Finishing(run.job_id, run.lease_token, results)]) == {run.job_id}


def fail(store: Storage, job_id: uuid.UUID, code: str, message: str) -> bool:
    with store.database.transaction() as session:
        return fail_job(session, job_id, code, message)


def set_ago(store: Storage, job_id: uuid.UUID, column: str, interval: str) -> None:
    """Move one of the job's timestamps ``interval`` into the past."""
    assert column in ("created_at", "enqueued_at", "lease_expires_at")
    with store.database.transaction() as session:
        session.execute(
            text(f"UPDATE jobs SET {column} = now() - CAST(:age AS interval) WHERE id = :id"),
            {"age": interval, "id": job_id},
        )


def snapshot(store: Storage, job_id: uuid.UUID) -> tuple[Any, ...]:
    """Everything about the job an unwanted state change would touch."""
    job = job_state(store, job_id)
    return (
        job.status,
        job.attempts,
        job.done_files,
        job.error_code,
        job.error_message,
        job.started_at,
        job.finished_at,
        job.lease_token,
    )


# create_job


def test_create_job_is_queued_with_its_uploads_in_order(store: Storage) -> None:
    images = [image_bytes(40, 30, seed=1), image_bytes(50, 20, seed=2, fmt="JPEG"), image_bytes(10, 10, seed=3)]
    names = ["c.png", "a.jpg", "b.png"]
    uploads = [new_upload(store.blobs, data, name) for data, name in zip(images, names, strict=True)]
    params = JobParams(model="default", conf=0.5, iou=0.6, imgsz=640)
    with store.database.transaction() as session:
        created = create_job(session, store.blobs, params, uploads, None)
        assert [u.position for u in created.uploads] == [0, 1, 2]  # loaded: the API answers from it

    job = job_state(store, created.id)
    assert (job.status, job.total_files, job.done_files, job.attempts) == ("queued", 3, 0, 0)
    assert (job.model, job.conf, job.iou, job.imgsz) == ("default", 0.5, 0.6, 640)
    assert job.task_id == str(job.id), "the first task id is the job id"
    assert job.enqueued_at is None and job.started_at is None and job.finished_at is None
    assert job.error_code is None and job.error_message is None and job.lease_token is None
    assert [(u.position, u.filename, u.deduplicated) for u in job.uploads] == [
        (0, "c.png", False),
        (1, "a.jpg", False),
        (2, "b.png", False),
    ]
    assert [(u.file.content_type, u.file.width, u.file.height) for u in job.uploads] == [
        ("image/png", 40, 30),
        ("image/jpeg", 50, 20),
        ("image/png", 10, 10),
    ]
    for upload, data in zip(job.uploads, images, strict=True):
        assert upload.file.sha256 == hashlib.sha256(data).hexdigest() and upload.file.size == len(data)
        assert store.blobs.path_of(upload.file.path).read_bytes() == data
        assert upload.result is None
    assert list(store.blobs.tmp_dir.iterdir()) == [], "every temp file was installed"
    assert (created.created_at, created.done_files, created.attempts) == (job.created_at, 0, 0), "as written"
    assert [(u.id, u.file_id, u.created_at, u.file.id, u.file.created_at) for u in created.uploads] == [
        (u.id, u.file_id, u.created_at, u.file.id, u.file.created_at) for u in job.uploads
    ]


def test_identical_bytes_are_stored_once_within_and_across_jobs(store: Storage) -> None:
    same, other = image_bytes(seed=10), image_bytes(seed=11)
    first = job_state(store, create_queued_job(store, same, other, same))
    second = job_state(store, create_queued_job(store, same))
    assert [u.deduplicated for u in first.uploads] == [False, False, True]
    assert second.uploads[0].deduplicated is True
    assert first.uploads[0].file_id == first.uploads[2].file_id == second.uploads[0].file_id
    assert first.uploads[1].file_id != first.uploads[0].file_id
    assert count(store, StoredFile) == 2
    assert sorted(p.name for p in store.blobs.blobs_dir.rglob("*") if p.is_file()) == sorted(
        hashlib.sha256(data).hexdigest() for data in (same, other)
    )
    assert list(store.blobs.tmp_dir.iterdir()) == [], "the duplicates' temp files were discarded"


# mark_enqueued and withdraw_job


def test_mark_enqueued_records_the_send_and_nothing_else(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=20))
    with store.database.transaction() as session:
        mark_enqueued(session, job_id, f"{job_id}-resent")
    job = job_state(store, job_id)
    assert job.enqueued_at is not None and job.task_id == f"{job_id}-resent"
    assert (job.status, job.attempts, job.started_at) == ("queued", 0, None)


def test_withdraw_job_removes_an_unsent_job_and_its_uploads(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=21), image_bytes(seed=22))
    with store.database.transaction() as session:
        withdraw_job(session, job_id)
    with store.database.transaction() as session:
        assert find_job(session, job_id, None) is None
    assert count(store, Upload, Upload.job_id == job_id) == 0
    assert count(store, StoredFile) == 2, "the stored files stay for retention to judge"


def test_withdraw_job_leaves_a_sent_job_alone(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=23))
    with store.database.transaction() as session:
        mark_enqueued(session, job_id, str(job_id))
    with store.database.transaction() as session:
        withdraw_job(session, job_id)
    job = job_state(store, job_id)
    assert job.status == "queued" and len(job.uploads) == 1


# begin_attempt


def test_begin_attempt_runs_the_job_under_a_lease_and_returns_its_pending_uploads(store: Storage) -> None:
    params = JobParams(model="default", conf=0.4, iou=0.5, imgsz=320)
    job_id = create_queued_job(store, *(image_bytes(seed=30 + i) for i in range(3)), params=params)
    uploads = job_state(store, job_id).uploads
    run = attempt(store, job_id)
    assert (run.job_id, run.params, run.total, run.done, run.attempts) == (job_id, params, 3, 0, 1)
    assert run.pending == [WorkItem(u.id, u.file.path, u.file.sha256) for u in uploads]
    job = job_state(store, job_id)
    assert (job.status, job.attempts, job.lease_token) == ("running", 1, run.lease_token)
    assert job.started_at is not None and job.finished_at is None
    with store.database.transaction() as session:
        lease_left = session.scalar(select(Job.lease_expires_at - func.now()).where(Job.id == job_id))
    assert timedelta(0) < lease_left <= LEASE


def test_no_second_attempt_while_the_lease_is_held(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=35))
    run = attempt(store, job_id)
    before = snapshot(store, job_id)
    with store.database.transaction() as session:
        assert begin_attempt(session, job_id, LEASE) is None
    assert snapshot(store, job_id) == before
    with store.database.transaction() as session:
        assert renew_lease(session, job_id, run.lease_token, LEASE)
        assert not renew_lease(session, job_id, uuid.uuid4(), LEASE)


def test_a_later_attempt_counts_skips_what_has_results_and_fences_the_old_one(store: Storage) -> None:
    job_id = create_queued_job(store, *(image_bytes(seed=40 + i) for i in range(3)))
    uploads = job_state(store, job_id).uploads
    first = attempt(store, job_id)
    first_start = job_state(store, job_id).started_at
    assert record(store, first, [result_for(uploads[1], CIRCLE)]) == 1
    set_ago(store, job_id, "lease_expires_at", "1 second")  # the first attempt's worker died

    second = attempt(store, job_id)
    assert (second.total, second.done, second.attempts) == (3, 1, 2)
    assert second.lease_token != first.lease_token
    assert second.pending == [
        WorkItem(uploads[0].id, uploads[0].file.path, uploads[0].file.sha256),
        WorkItem(uploads[2].id, uploads[2].file.path, uploads[2].file.sha256),
    ]
    job = job_state(store, job_id)
    assert job.attempts == 2 and job.started_at == first_start, "the first start is kept"

    # The first attempt wakes up: it writes nothing, cannot finish or fail the job, cannot renew.
    assert record(store, first, [result_for(uploads[0], CIRCLE)]) is None
    assert finish(store, first, [result_for(uploads[0], CIRCLE)]) is False
    with store.database.transaction() as session:
        assert fail_job(session, job_id, "inference_failed", "stale", token=first.lease_token) is False
        assert not renew_lease(session, job_id, first.lease_token, LEASE)
    job = job_state(store, job_id)
    assert (job.status, job.done_files) == ("running", 1) and job.uploads[0].result is None


def test_begin_attempts_begins_several_jobs_in_two_statements_each_under_a_lease_of_its_own(store: Storage) -> None:
    two = create_queued_job(store, image_bytes(seed=60), image_bytes(seed=61))
    one = create_queued_job(store, image_bytes(seed=62))
    held = create_queued_job(store, image_bytes(seed=63))
    attempt(store, held)
    finished = create_queued_job(store, image_bytes(seed=64))
    complete_job(store, finished)
    ids = [one, held, two, finished, one, uuid.uuid4()]  # ``one`` twice: two messages of one job
    with counting_statements(store.database.engine) as counts, store.database.transaction() as session:
        runs = begin_attempts(session, ids, LEASE)
    assert (counts["UPDATE"], counts["SELECT"]) == (1, 1), counts
    assert [run.job_id if run else None for run in runs] == [one, None, two, None, None, None]
    first, second = runs[0], runs[2]
    assert first is not None and second is not None and first.lease_token != second.lease_token
    assert [len(first.pending), len(second.pending)] == [1, 2]
    assert second.pending == [WorkItem(u.id, u.file.path, u.file.sha256) for u in job_state(store, two).uploads]
    for run in (first, second):
        job = job_state(store, run.job_id)
        assert (job.status, job.attempts, job.lease_token) == ("running", 1, run.lease_token)


def test_begin_attempt_is_none_for_an_unknown_job(store: Storage) -> None:
    with store.database.transaction() as session:
        assert begin_attempt(session, uuid.uuid4(), LEASE) is None


def test_begin_attempt_is_none_for_finished_jobs_and_changes_nothing(store: Storage) -> None:
    succeeded = create_queued_job(store, image_bytes(seed=50))
    complete_job(store, succeeded)
    failed = create_queued_job(store, image_bytes(seed=51))
    assert fail(store, failed, "model_unavailable", "no weights")
    cancelled = create_queued_job(store, image_bytes(seed=52))
    with store.database.transaction() as session:
        assert cancel_job(session, cancelled)
    for job_id in (succeeded, failed, cancelled):
        before = snapshot(store, job_id)
        with store.database.transaction() as session:
            assert begin_attempt(session, job_id, LEASE) is None
        assert snapshot(store, job_id) == before


# record_results and finish_jobs


def test_record_results_upserts_and_never_duplicates(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=60), image_bytes(seed=61))
    uploads = job_state(store, job_id).uploads
    run = attempt(store, job_id)
    assert record(store, run, [result_for(uploads[0])]) == 1
    assert record(store, run, [FileResult(uploads[0].id, 64, 48, CIRCLE)]) == 1  # a redelivered batch

    assert count(store, Result, Result.job_id == job_id) == 1
    job = job_state(store, job_id)
    result = job.uploads[0].result
    assert result is not None and result.detections == CIRCLE, "the latest write wins"
    assert job.uploads[1].result is None
    assert (job.status, job.done_files, job.finished_at) == ("running", 1, None)

    assert finish(store, run, [result_for(uploads[0]), result_for(uploads[1])])  # a last batch repeating one
    assert count(store, Result, Result.job_id == job_id) == 2, "finishing never duplicates a result"
    assert job_state(store, job_id).done_files == 2


def test_record_results_counts_done_files_and_finish_jobs_ends_as_succeeded(store: Storage) -> None:
    job_id = create_queued_job(store, *(image_bytes(seed=70 + i) for i in range(3)))
    uploads = job_state(store, job_id).uploads
    run = attempt(store, job_id)
    assert record(store, run, [result_for(u) for u in uploads[:2]]) == 2
    assert job_state(store, job_id).done_files == 2
    broken = FileResult(uploads[2].id, None, None, [], "the file could not be decoded as an image")
    assert finish(store, run, [broken])
    job = job_state(store, job_id)
    assert (job.status, job.done_files, job.error_code, job.error_message) == ("succeeded", 3, None, None)
    assert job.finished_at is not None and job.lease_token is None and job.lease_expires_at is None
    result = job.uploads[2].result
    assert result is not None and (result.width, result.height, result.error) == (None, None, broken.error)


def test_neither_record_results_nor_finish_jobs_reopens_a_finished_job(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=80))
    uploads = job_state(store, job_id).uploads
    run = attempt(store, job_id)
    assert fail(store, job_id, "inference_failed", "out of memory")
    before = snapshot(store, job_id)
    assert record(store, run, [result_for(uploads[0])]) is None
    assert finish(store, run, [result_for(uploads[0])]) is False
    assert snapshot(store, job_id) == before
    assert before[0] == "failed" and count(store, Result, Result.job_id == job_id) == 0


# fail_job


def test_fail_job_finishes_with_a_code_and_a_bounded_message(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=90))
    attempt(store, job_id)
    assert fail(store, job_id, "model_unavailable", "x" * 5000)
    job = job_state(store, job_id)
    assert (job.status, job.error_code, job.error_message) == ("failed", "model_unavailable", "x" * ERROR_MESSAGE_CHARS)
    assert job.finished_at is not None and job.lease_token is None


def test_a_round_failure_is_the_exception_cut_as_fail_job_cuts_it() -> None:
    """The round's message (logged, sent to Flower) is what the failed job keeps: one cut, in jobs.lifecycle."""
    message = exception_message(RuntimeError("x" * 5000))
    assert message == "RuntimeError: " + "x" * (ERROR_MESSAGE_CHARS - len("RuntimeError: "))
    assert kept_message(message) == message


def test_fail_job_is_a_no_op_on_a_finished_job(store: Storage) -> None:
    succeeded = create_queued_job(store, image_bytes(seed=91))
    complete_job(store, succeeded)
    failed = create_queued_job(store, image_bytes(seed=92))
    assert fail(store, failed, "model_unavailable", "first")
    for job_id in (succeeded, failed):
        before = snapshot(store, job_id)
        assert fail(store, job_id, "soft_time_limit", "second") is False
        assert snapshot(store, job_id) == before
    assert job_state(store, succeeded).error_code is None
    assert job_state(store, failed).error_message == "first"


# cancel_job and retry_job


def test_cancel_ends_an_unfinished_job_keeping_its_results(store: Storage) -> None:
    queued = create_queued_job(store, image_bytes(seed=95))
    running = create_queued_job(store, image_bytes(seed=96), image_bytes(seed=97))
    run = attempt(store, running)
    assert record(store, run, [result_for(job_state(store, running).uploads[0])]) == 1
    with store.database.transaction() as session:
        assert cancel_job(session, queued) and cancel_job(session, running)
    for job_id in (queued, running):
        job = job_state(store, job_id)
        assert job.status == "cancelled" and job.finished_at is not None and job.lease_token is None
    assert job_state(store, running).done_files == 1
    assert record(store, run, []) is None, "the cancelled attempt stops at its next write"
    assert finish(store, run, [result_for(job_state(store, running).uploads[1])]) is False, "and cannot finish"
    assert job_state(store, running).status == "cancelled"
    assert count(store, Result, Result.job_id == running) == 1
    with store.database.transaction() as session:
        assert not cancel_job(session, queued), "a finished job cannot be cancelled again"


def test_cancel_by_an_old_task_id_leaves_the_job_alone(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=98))
    with store.database.transaction() as session:
        mark_enqueued(session, job_id, f"{job_id}-second")
    with store.database.transaction() as session:
        assert not cancel_job(session, job_id, task_id=str(job_id))
        assert cancel_job(session, job_id, task_id=f"{job_id}-second")


def test_a_revoke_of_a_retried_jobs_old_task_before_its_new_one_is_sent_leaves_it_alone(store: Storage) -> None:
    """retry_job queues the job again under its old task id; until the new one is sent, a revoke of the old
    id (the one its cancel sent) must not cancel it. The reaper, a worker and the missed revokes all ask so."""
    job_id = create_queued_job(store, image_bytes(seed=99))
    with store.database.transaction() as session:
        mark_enqueued(session, job_id, str(job_id))
        assert cancel_job(session, job_id, task_id=str(job_id))
    with store.database.transaction() as session:
        assert retry_job(session, job_id)
        assert not cancel_job(session, job_id, task_id=str(job_id))
    assert job_state(store, job_id).status == "queued"
    with store.database.transaction() as session:
        mark_enqueued(session, job_id, f"{job_id}-retry")
        assert not cancel_job(session, job_id, task_id=str(job_id))
        assert cancel_job(session, job_id, task_id=f"{job_id}-retry")


def test_retry_requeues_failed_and_cancelled_jobs_only(store: Storage) -> None:
    failed = create_queued_job(store, image_bytes(seed=100), image_bytes(seed=101))
    run = attempt(store, failed)
    assert record(store, run, [result_for(job_state(store, failed).uploads[0])]) == 1
    assert fail(store, failed, "inference_failed", "out of memory")
    succeeded = create_queued_job(store, image_bytes(seed=102))
    complete_job(store, succeeded)
    running = create_queued_job(store, image_bytes(seed=103))
    attempt(store, running)

    with store.database.transaction() as session:
        assert retry_job(session, failed)
        assert not retry_job(session, succeeded) and not retry_job(session, running)
    job = job_state(store, failed)
    assert (job.status, job.attempts, job.finished_at, job.error_code, job.enqueued_at) == (
        "queued",
        0,
        None,
        None,
        None,
    )
    again = attempt(store, failed)
    assert (again.done, [w.upload_id for w in again.pending]) == (1, [job.uploads[1].id]), "results are kept"


# resendable_jobs (the reaper's query)


def test_resendable_jobs_are_unfinished_jobs_nothing_works_on(store: Storage) -> None:
    def job(seed: int, age: str = "1 hour") -> uuid.UUID:
        job_id = create_queued_job(store, image_bytes(seed=seed))
        set_ago(store, job_id, "created_at", age)
        return job_id

    never_sent, older = job(110), job(111, "2 hours")
    job(112, "1 second")  # within a lease period: its API may still be sending it
    sent_recently = job(113)
    with store.database.transaction() as session:
        mark_enqueued(session, sent_recently, str(sent_recently))
    sent_long_ago = job(114)
    with store.database.transaction() as session:
        mark_enqueued(session, sent_long_ago, str(sent_long_ago))
    set_ago(store, sent_long_ago, "enqueued_at", "1 hour")  # its message was lost or purged
    running = job(115)
    attempt(store, running)
    expired = job(116, "3 hours")
    attempt(store, expired)
    set_ago(store, expired, "lease_expires_at", "1 second")
    succeeded, failed, cancelled = job(117), job(118), job(119)
    complete_job(store, succeeded)
    assert fail(store, failed, "model_unavailable", "no weights")
    with store.database.transaction() as session:
        assert cancel_job(session, cancelled)

    with store.database.transaction() as session:
        found = resendable_jobs(session, LEASE, limit=10)
    assert found == [  # oldest first
        (expired, "running", str(expired)),
        (older, "queued", str(older)),
        (never_sent, "queued", str(never_sent)),
        (sent_long_ago, "queued", str(sent_long_ago)),
    ]
    with store.database.transaction() as session:
        assert [job_id for job_id, _, _ in resendable_jobs(session, LEASE, limit=2)] == [expired, older]


def test_resendable_jobs_skip_rows_another_transaction_holds(store: Storage) -> None:
    first, second = (create_queued_job(store, image_bytes(seed=120 + i)) for i in range(2))
    set_ago(store, first, "created_at", "2 hours")
    set_ago(store, second, "created_at", "1 hour")
    with store.database.transaction() as one, store.database.transaction() as other:
        assert [job_id for job_id, _, _ in resendable_jobs(one, LEASE, limit=1)] == [first]
        assert [job_id for job_id, _, _ in resendable_jobs(other, LEASE, limit=10)] == [second]
    assert count(store, Job, Job.enqueued_at.is_(None)) == 2, "finding them changes nothing"


def test_fail_job_by_the_attempt_holding_the_lease(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=93))
    run = attempt(store, job_id)
    with store.database.transaction() as session:
        assert fail_job(session, job_id, "inference_failed", "boom", token=run.lease_token)
    job = job_state(store, job_id)
    assert (job.status, job.error_code, job.lease_token, job.lease_expires_at) == (
        "failed",
        "inference_failed",
        None,
        None,
    )


def test_a_running_job_without_a_lease_counts_as_expired(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=94))
    first = attempt(store, job_id)
    with store.database.transaction() as session:
        session.execute(text("UPDATE jobs SET lease_expires_at = NULL WHERE id = :id"), {"id": job_id})
    second = attempt(store, job_id)
    assert second.attempts == 2 and second.lease_token != first.lease_token


def test_job_status(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=99))
    with store.database.transaction() as session:
        assert job_status(session, job_id) == "queued"
        assert job_status(session, uuid.uuid4()) is None
    attempt(store, job_id)
    with store.database.transaction() as session:
        assert job_status(session, job_id) == "running"
        assert cancel_job(session, job_id)
        assert job_status(session, job_id) == "cancelled"


# Tenants: private deduplication and the active-jobs count


def tenant(store: Storage, name: str) -> uuid.UUID:
    with store.database.transaction() as session:
        return ensure_tenant(session, name).id


def test_deduplicated_only_when_the_same_tenant_sent_the_bytes_before(store: Storage) -> None:
    alice, bob = tenant(store, "alice"), tenant(store, "bob")
    shared = image_bytes(seed=130)
    first = job_state(store, create_queued_job(store, shared, tenant_id=alice)).uploads[0]
    other = job_state(store, create_queued_job(store, shared, tenant_id=bob)).uploads[0]
    again = job_state(store, create_queued_job(store, shared, tenant_id=alice)).uploads[0]
    twice = job_state(store, create_queued_job(store, shared, shared, tenant_id=bob)).uploads
    assert (first.deduplicated, other.deduplicated, again.deduplicated) == (False, False, True)
    assert [u.deduplicated for u in twice] == [True, True]  # bob has sent it before now
    assert first.file_id == other.file_id == again.file_id, "storage stays deduplicated across tenants"
    assert count(store, StoredFile) == 1
    carol = tenant(store, "carol")
    within = job_state(store, create_queued_job(store, shared, shared, tenant_id=carol)).uploads
    assert [u.deduplicated for u in within] == [False, True], "the second copy in one job is the tenant's own"


def test_tenant_has_file(store: Storage) -> None:
    alice, bob = tenant(store, "alice"), tenant(store, "bob")
    file_id = job_state(store, create_queued_job(store, image_bytes(seed=131), tenant_id=alice)).uploads[0].file_id
    legacy = job_state(store, create_queued_job(store, image_bytes(seed=132))).uploads[0].file_id
    with store.database.transaction() as session:
        assert tenant_has_file(session, alice, file_id) and not tenant_has_file(session, bob, file_id)
        assert not tenant_has_file(session, alice, uuid.uuid4())
        assert tenant_has_file(session, None, legacy) and not tenant_has_file(session, None, file_id)


def test_active_jobs_counts_the_tenants_queued_and_running_jobs(store: Storage) -> None:
    alice, bob = tenant(store, "alice"), tenant(store, "bob")
    queued = create_queued_job(store, image_bytes(seed=140), tenant_id=alice)
    running = create_queued_job(store, image_bytes(seed=141), tenant_id=alice)
    attempt(store, running)
    done = create_queued_job(store, image_bytes(seed=142), tenant_id=alice)
    complete_job(store, done)
    create_queued_job(store, image_bytes(seed=143), tenant_id=bob)
    with store.database.transaction() as session:
        assert (active_jobs(session, alice), active_jobs(session, bob), active_jobs(session, None)) == (2, 1, 0)
        assert cancel_job(session, queued)
        assert active_jobs(session, alice) == 1


def test_active_jobs_serialises_a_tenants_submissions(store: Storage) -> None:
    """The count takes the tenant's lock until commit: a second count of the same tenant waits for it."""
    alice, bob = tenant(store, "alice"), tenant(store, "bob")
    with store.database.transaction() as first:
        assert active_jobs(first, alice) == 0
        with store.database.transaction() as other:
            other.execute(text("SET LOCAL lock_timeout = '200ms'"))
            assert active_jobs(other, bob) == 0, "another tenant is not held up"
            with pytest.raises(OperationalError, match="lock timeout"):
                active_jobs(other, alice)


# finish_jobs, renew_leases, release_attempt: a worker's lean path and its rounds (tasks/intake.py)


def test_a_single_image_job_starts_in_two_statements_and_ends_in_two(store: Storage, module_database_url: str) -> None:
    job_id = create_queued_job(store, image_bytes(seed=1500))
    worker = Storage(module_database_url, store.blobs.root, pre_ping=False)  # as tasks/runtime.py opens it
    with counting_statements(worker.database.engine) as counts:
        run = attempt(worker, job_id)
        with worker.database.transaction() as session:
            upload = run.pending[0]
            ended = finish_jobs(
                session, [Finishing(job_id, run.lease_token, [FileResult(upload.upload_id, 64, 48, [])])]
            )
    assert ended == {job_id}
    worker.dispose()
    assert dict(counts) == {"BEGIN": 2, "UPDATE": 2, "SELECT": 1, "INSERT": 1, "COMMIT": 2}, counts
    job = job_state(store, job_id)
    assert (job.status, job.done_files, job.lease_token) == ("succeeded", 1, None)


def test_finish_jobs_ends_a_round_in_two_statements_and_fences_out_a_cancelled_job(store: Storage) -> None:
    job_ids = [create_queued_job(store, image_bytes(seed=1510 + n)) for n in range(3)]
    runs = [attempt(store, job_id) for job_id in job_ids]
    with store.database.transaction() as session:
        assert renew_leases(session, [(r.job_id, r.lease_token) for r in runs], LEASE) == set(job_ids)
        assert cancel_job(session, job_ids[1])
    finishing = [Finishing(r.job_id, r.lease_token, [FileResult(r.pending[0].upload_id, 64, 48, [])]) for r in runs]
    with counting_statements(store.database.engine) as counts, store.database.transaction() as session:
        assert finish_jobs(session, finishing) == {job_ids[0], job_ids[2]}
    assert counts["UPDATE"] == 1 and counts["INSERT"] == 1 and counts["SELECT"] == 0, counts
    assert [job_state(store, j).status for j in job_ids] == ["succeeded", "cancelled", "succeeded"]
    assert count(store, Result, Result.job_id == job_ids[1]) == 0, "a fenced-out attempt writes nothing"
    assert count(store, Result, Result.job_id.in_(job_ids)) == 2
    with store.database.transaction() as session:
        assert finish_jobs(session, finishing) == set(), "a second delivery of the round's end writes nothing"
    assert count(store, Result, Result.job_id.in_(job_ids)) == 2


def test_release_attempt_queues_the_job_again_as_if_never_begun(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=1520))
    run = attempt(store, job_id)
    with store.database.transaction() as session:
        assert release_attempt(session, job_id, run.lease_token)
        assert not release_attempt(session, job_id, run.lease_token)
    job = job_state(store, job_id)
    assert (job.status, job.attempts, job.lease_token) == ("queued", 0, None)
    assert attempt(store, job_id).attempts == 1


def test_a_job_retried_after_its_owner_deleted_a_file_counts_only_the_files_it_has(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=120), image_bytes(seed=121))
    attempt(store, job_id)
    with store.database.transaction() as session:  # what DELETE /api/v1/files/<id> leaves of the second upload
        assert cancel_job(session, job_id)
        session.execute(
            text("UPDATE uploads SET file_id = NULL, file_deleted_at = now() WHERE job_id = :id AND position = 1"),
            {"id": job_id},
        )
        assert retry_job(session, job_id)
    run = attempt(store, job_id)
    (kept,) = run.pending
    assert finish(store, run, [FileResult(kept.upload_id, 64, 48, [])])
    job = job_state(store, job_id)
    assert (job.status, job.done_files, job.total_files) == ("succeeded", 1, 2)

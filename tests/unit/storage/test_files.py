"""Stored-file rows: one live row per content, healed when its bytes went missing, and who references it."""

from __future__ import annotations

from sqlalchemy import select

from harness.images import image_bytes
from storage import Storage
from storage.files import referenced_by_jobs
from storage.tables import Job, StoredFile
from tests.helpers import complete_job, create_queued_job, job_state


def test_an_upload_heals_a_row_whose_bytes_went_missing(store: Storage) -> None:
    data = image_bytes(seed=1)
    first = job_state(store, create_queued_job(store, data)).uploads[0]
    assert store.blobs.delete(first.file.path) == len(data)
    again = job_state(store, create_queued_job(store, data)).uploads[0]
    assert again.deduplicated is True and again.file_id == first.file_id
    assert store.blobs.path_of(first.file.path).read_bytes() == data
    assert list(store.blobs.tmp_dir.iterdir()) == []


def test_tombstoned_content_is_stored_anew(store: Storage) -> None:
    data = image_bytes(seed=2)
    first = job_state(store, create_queued_job(store, data)).uploads[0]
    with store.database.transaction() as session:
        row = session.get(StoredFile, first.file_id)
        assert row is not None
        row.deleted_at = session.scalar(select(StoredFile.created_at).where(StoredFile.id == row.id))
    store.blobs.delete(first.file.path)
    again = job_state(store, create_queued_job(store, data)).uploads[0]
    assert again.deduplicated is False and again.file_id != first.file_id
    assert store.blobs.exists(again.file.path)


def test_referenced_by_jobs_sees_only_jobs_meeting_the_conditions(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=5))
    file_id = job_state(store, job_id).uploads[0].file_id
    unfinished = select(referenced_by_jobs(Job.finished_at.is_(None))).where(StoredFile.id == file_id)
    with store.database.transaction() as session:
        assert session.scalar(unfinished) is True
    complete_job(store, job_id)
    with store.database.transaction() as session:
        assert session.scalar(unfinished) is False
        assert session.scalar(select(referenced_by_jobs()).where(StoredFile.id == file_id)) is True

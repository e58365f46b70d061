"""What refers to a stored file, and releasing the rows nothing refers to (tombstoned under the digest lock)."""

from __future__ import annotations

from sqlalchemy import select

from harness.images import image_bytes
from jobs.lifecycle import withdraw_job
from storage import Storage
from storage.maintenance.release import referenced, release_unreferenced
from storage.tables import StoredFile, TenantFile
from tests.functional.storage_support import resumable_upload
from tests.helpers import add_key, create_queued_job, job_state


def test_an_upload_a_tenant_file_or_a_resumable_upload_refers_to_a_row(store: Storage) -> None:
    tenant_id = add_key(store, "owner").tenant_id
    jobs = [create_queued_job(store, image_bytes(seed=i)) for i in range(4)]
    by_job, by_tenant, by_upload, none = (job_state(store, j).uploads[0].file for j in jobs)
    with store.database.transaction() as session:
        for job_id in jobs[1:]:
            withdraw_job(session, job_id)
        session.add(TenantFile(tenant_id=tenant_id, file_id=by_tenant.id, filename="own.png"))
        session.add(resumable_upload(tenant_id, by_upload.id, by_upload.size))
        session.flush()
        named = dict(session.execute(select(StoredFile.id, referenced())).all())
        assert named == {by_job.id: True, by_tenant.id: True, by_upload.id: True, none.id: False}

        released = release_unreferenced(session, [f.id for f in (by_job, by_tenant, by_upload, none)])
        assert [(r.id, r.sha256, r.size, r.path) for r in released] == [(none.id, none.sha256, none.size, none.path)]
        assert release_unreferenced(session, [none.id]) == []  # a tombstone is released once
    with store.database.transaction() as session:
        tombstoned = session.scalars(select(StoredFile.id).where(StoredFile.deleted_at.is_not(None))).all()
    assert tombstoned == [none.id] and store.blobs.exists(none.path)  # the bytes go after the commit

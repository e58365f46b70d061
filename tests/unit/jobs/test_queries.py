"""Reading jobs: each query loads what its readers use, and nothing else loads behind their back."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.exc import InvalidRequestError

from accounts.keys import ensure_tenant
from files.ownership import add_tenant_file
from harness.images import image_bytes
from jobs.lifecycle import FileResult, JobParams, begin_attempt, create_job, record_results
from jobs.queries import find_file, find_job, first_filenames, page_of_jobs
from storage import Storage
from tests.helpers import LEASE, create_queued_job, job_state, new_upload


def test_find_job_loads_uploads_files_and_results(store: Storage) -> None:
    job_id = create_queued_job(store, image_bytes(seed=1), image_bytes(seed=2))
    with store.database.transaction() as session:
        run = begin_attempt(session, job_id, LEASE)
        assert run is not None
        result = FileResult(run.pending[0].upload_id, 64, 48, [])
        assert record_results(session, job_id, run.lease_token, [result], LEASE) == 1
    with store.database.transaction() as session:
        job = find_job(session, job_id, None)
    assert job is not None  # read below with its session closed
    assert [u.filename for u in job.uploads] == ["img-0.png", "img-1.png"]
    assert [u.file.width for u in job.uploads] == [64, 64]
    assert job.uploads[0].result is not None and job.uploads[1].result is None


def test_find_job_of_an_unknown_id_is_none(store: Storage) -> None:
    with store.database.transaction() as session:
        assert find_job(session, uuid.uuid4(), None) is None


def test_page_of_jobs_is_newest_first_with_the_total(store: Storage) -> None:
    ids = [create_queued_job(store, image_bytes(seed=10 + i)) for i in range(3)]
    with store.database.transaction() as session:
        first, total = page_of_jobs(session, limit=2, offset=0, tenant_id=None)
        rest, _ = page_of_jobs(session, limit=2, offset=2, tenant_id=None)
    assert total == 3
    assert [j.id for j in first + rest] == ids[::-1]


def test_first_filenames_reads_a_few_names_of_each_job(store: Storage) -> None:
    ids = [create_queued_job(store, image_bytes(seed=60), image_bytes(seed=61 + i)) for i in range(2)]
    with store.database.transaction() as session:
        assert first_filenames(session, ids, 1) == {job_id: ["img-0.png"] for job_id in ids}
        assert first_filenames(session, ids[:1], 5) == {ids[0]: ["img-0.png", "img-1.png"]}


def test_what_a_query_did_not_load_raises_instead_of_loading(store: Storage) -> None:
    create_queued_job(store, image_bytes(seed=20))
    with store.database.transaction() as session:
        (job,), _ = page_of_jobs(session, limit=1, offset=0, tenant_id=None)
        with pytest.raises(InvalidRequestError, match="lazy='raise'"):
            _ = job.uploads


def tenant(store: Storage, name: str) -> uuid.UUID:
    with store.database.transaction() as session:
        return ensure_tenant(session, name).id


def test_a_tenant_sees_its_own_jobs_and_none_sees_them_all(store: Storage) -> None:
    alice, bob = tenant(store, "alice"), tenant(store, "bob")
    alices = [create_queued_job(store, image_bytes(seed=30 + i), tenant_id=alice) for i in range(2)]
    bobs = create_queued_job(store, image_bytes(seed=32), tenant_id=bob)
    with store.database.transaction() as session:
        assert find_job(session, alices[0], alice) is not None
        assert find_job(session, alices[0], bob) is None, "another tenant's job is not found"
        assert find_job(session, bobs, None) is not None, "None is every tenant (admins, workers)"
        mine, total = page_of_jobs(session, limit=10, offset=0, tenant_id=alice)
        assert ([j.id for j in mine], total) == (alices[::-1], 2)
        theirs, total = page_of_jobs(session, limit=10, offset=0, tenant_id=bob)
        assert ([j.id for j in theirs], total) == ([bobs], 1)
        everyone, total = page_of_jobs(session, limit=10, offset=0, tenant_id=None)
        assert total == 3 and {j.id for j in everyone} == {*alices, bobs}


def test_find_file_is_the_tenants_own_upload_of_it(store: Storage) -> None:
    alice, bob, carol = tenant(store, "alice"), tenant(store, "bob"), tenant(store, "carol")
    data = image_bytes(seed=40)
    first = create_queued_job(store, image_bytes(seed=41), data, tenant_id=alice)
    file_id = job_state(store, first).uploads[1].file_id
    with store.database.transaction() as session:  # bob uploads the same bytes later, under another name
        uploads = [new_upload(store.blobs, data, "bobs-name.png")]
        create_job(session, store.blobs, JobParams(model="default"), uploads, bob)
    with store.database.transaction() as session:
        found = find_file(session, file_id, alice)
        assert found is not None and found.filename == "img-1.png" and found.file.content_type == "image/png"
        alices_since = found.held_since
        found = find_file(session, file_id, bob)
        assert found is not None and found.filename == "bobs-name.png", "each tenant sees its own filename"
        assert found.held_since > alices_since, "and since when it holds it: not when another tenant stored it"
        assert find_file(session, file_id, carol) is None, "a tenant that never uploaded it cannot see it"
        found = find_file(session, file_id, None)
        assert found is not None and found.filename == "img-1.png", "an admin sees the first upload's name"
        assert find_file(session, uuid.uuid4(), None) is None
        add_tenant_file(session, carol, file_id, "carols-upload.png")  # a finished resumable upload of the bytes
    with store.database.transaction() as session:
        found = find_file(session, file_id, carol)
        assert found is not None and found.filename == "carols-upload.png", "a tenant's own file is visible to it"

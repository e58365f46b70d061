"""The job service against real PostgreSQL, with no Flask: what it commits, sends and refuses.

The broker is the one part played here: :class:`Broker` records the tasks the service
sends (and can refuse them, as one that is down does), and looks at the database at the
moment of each send, to show that a job is committed before its task leaves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from accounts.keys import ensure_tenant
from config import Settings
from harness.images import image_bytes
from jobs.catalog import LoadedModel, record_loaded_model
from jobs.errors import (
    AlreadyFinished,
    BrokerUnavailable,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    JobNotFound,
    NotRetryable,
    TooManyActiveJobs,
)
from jobs.idempotency import StoredResponse, claim_key, fingerprint
from jobs.lifecycle import JobParams, NewUpload
from jobs.queries import find_job
from jobs.service import JobService, NewJob
from storage import Storage
from storage.blobs import IncomingFile
from storage.images import identify_image
from storage.tables import IdempotencyKey, Job

ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")


class Broker:
    """The service's task sender: records each send with whether its job was committed by then, and each revoke;
    while ``down``, refuses every send as an unreachable broker does."""

    def __init__(self, store: Storage) -> None:
        self.store = store
        self.down = False
        self.sent: list[tuple[uuid.UUID, str, bool]] = []
        self.revoked: list[str] = []

    def send_detect(self, job_id: uuid.UUID, task_id: str) -> None:
        if self.down:
            raise ConnectionRefusedError("broker down")
        with self.store.database.transaction() as other:  # another connection sees committed rows only
            committed = find_job(other, job_id, None) is not None
        self.sent.append((job_id, task_id, committed))

    def revoke(self, task_id: str) -> None:
        self.revoked.append(task_id)


def answered(job: Job) -> StoredResponse:
    """The caller's answer to a new job, as the API builds it (the service stores it for replays)."""
    return StoredResponse(202, {"job_id": str(job.id), "files": [u.filename for u in job.uploads]})


# Factories: a service over the test's storage, a tenant, and a submission of images made from seeds.
def service_of(store: Storage, broker: Broker, **env: str) -> JobService:
    return JobService(Settings.from_env(env), store, broker)


def tenant(store: Storage, name: str = "acme") -> uuid.UUID:
    with store.database.transaction() as session:
        return ensure_tenant(session, name).id


NewJobOf = Callable[..., NewJob]


@pytest.fixture()
def new_job(store: Storage) -> Iterator[NewJobOf]:
    """Makes a submission of one image per seed, streamed to the volume and identified as the API does; removes
    the temp files a submission did not take when the test ends, as the API does when its request ends."""
    made: list[IncomingFile] = []

    def make(*seeds: int, params: JobParams | None = None) -> NewJob:
        uploads = []
        for seed in seeds:
            incoming = store.blobs.new_incoming()
            made.append(incoming)
            incoming.write(image_bytes(seed=seed))
            uploads.append(NewUpload(incoming, f"img-{seed}.png", identify_image(incoming)))
        return NewJob(params or JobParams(model="shapes"), uploads)

    yield make
    for incoming in made:
        incoming.discard()


@pytest.fixture()
def broker(store: Storage) -> Broker:
    return Broker(store)


@pytest.fixture()
def service(store: Storage, broker: Broker) -> JobService:
    return service_of(store, broker)


def in_session(store: Storage, work: Callable[[Session], T]) -> T:
    """``work`` in a session of its own, as one request of the API's."""
    with store.database.session() as session:
        return work(session)


def count_jobs(store: Storage) -> int:
    return in_session(store, lambda s: s.scalar(select(func.count()).select_from(Job)) or 0)


def test_a_job_is_committed_then_its_task_sent_then_marked_enqueued(
    store: Storage, new_job: NewJobOf, broker: Broker, service: JobService
) -> None:
    tenant_id = tenant(store)
    submission = in_session(store, lambda s: service.submit(s, tenant_id, new_job(1, 2, 2), answered))
    assert broker.sent == [(submission.job_id, str(submission.job_id), True)], "sent after the commit"
    assert submission.answer.body == {
        "job_id": str(submission.job_id),
        "files": ["img-1.png", "img-2.png", "img-2.png"],
    }
    assert not submission.replayed
    job = in_session(store, lambda s: service.find(s, submission.job_id, tenant_id))
    assert (job.status, job.tenant_id, job.total_files, job.task_id) == ("queued", tenant_id, 3, str(job.id))
    assert job.enqueued_at is not None
    sizes = {u.filename: u.file.size for u in job.uploads}
    assert submission.new_bytes == sizes["img-1.png"] + sizes["img-2.png"], "a file sent twice counts once"


def test_a_refused_task_withdraws_the_job_and_releases_its_key(
    store: Storage, new_job: NewJobOf, broker: Broker, service: JobService
) -> None:
    tenant_id = tenant(store)
    broker.down = True
    with pytest.raises(BrokerUnavailable) as refused:
        in_session(store, lambda s: service.submit(s, tenant_id, new_job(3), answered, "key-1"))
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)
    assert count_jobs(store) == 0, "the client got no job: none is stored"
    assert in_session(store, lambda s: s.scalar(select(func.count()).select_from(IdempotencyKey))) == 0
    broker.down = False
    again = in_session(store, lambda s: service.submit(s, tenant_id, new_job(3), answered, "key-1"))
    assert not again.replayed and count_jobs(store) == 1, "the released key serves the retry"


def test_past_the_active_jobs_limit_nothing_is_stored_or_sent(
    store: Storage, new_job: NewJobOf, broker: Broker
) -> None:
    service = service_of(store, broker, QUOTA_ACTIVE_JOBS="1")
    tenant_id, other = tenant(store), tenant(store, "other")
    in_session(store, lambda s: service.submit(s, tenant_id, new_job(4), answered))
    with pytest.raises(TooManyActiveJobs) as refused:
        in_session(store, lambda s: service.submit(s, tenant_id, new_job(5), answered))
    assert refused.value.limit == 1 and "1 jobs queued or running" in str(refused.value)
    assert count_jobs(store) == 1 and len(broker.sent) == 1
    in_session(store, lambda s: service.submit(s, other, new_job(5), answered))  # a limit per tenant
    assert count_jobs(store) == 2


def test_the_same_key_and_request_replays_the_first_answer(
    store: Storage, new_job: NewJobOf, broker: Broker, service: JobService
) -> None:
    tenant_id = tenant(store)
    first = in_session(store, lambda s: service.submit(s, tenant_id, new_job(6), answered, "key-2"))
    replay = in_session(store, lambda s: service.submit(s, tenant_id, new_job(6), answered, "key-2"))
    assert replay.replayed and (replay.job_id, replay.answer) == (first.job_id, first.answer)
    assert replay.new_bytes == 0 and len(broker.sent) == 1 and count_jobs(store) == 1
    other_tenant = tenant(store, "other")
    theirs = in_session(store, lambda s: service.submit(s, other_tenant, new_job(6), answered, "key-2"))
    assert not theirs.replayed and theirs.job_id != first.job_id, "keys belong to a tenant"


def test_the_same_key_for_another_request_is_refused(store: Storage, new_job: NewJobOf, service: JobService) -> None:
    tenant_id = tenant(store)
    in_session(store, lambda s: service.submit(s, tenant_id, new_job(7), answered, "key-3"))
    with pytest.raises(IdempotencyKeyReused):
        in_session(store, lambda s: service.submit(s, tenant_id, new_job(8), answered, "key-3"))
    other_params = new_job(7, params=JobParams(model="shapes", conf=0.5))
    with pytest.raises(IdempotencyKeyReused):
        in_session(store, lambda s: service.submit(s, tenant_id, other_params, answered, "key-3"))
    assert count_jobs(store) == 1


def test_a_key_whose_request_is_being_served_is_refused(
    store: Storage, new_job: NewJobOf, broker: Broker, service: JobService
) -> None:
    tenant_id = tenant(store)
    submitted = new_job(9)
    same_request = fingerprint(submitted.params, [u.incoming.sha256 for u in submitted.uploads])
    with store.database.transaction() as session:  # the same request, sent before, claimed the key and is at work
        claim_key(session, tenant_id, "key-4", same_request)
    with pytest.raises(IdempotencyKeyInProgress):
        in_session(store, lambda s: service.submit(s, tenant_id, submitted, answered, "key-4"))
    assert count_jobs(store) == 0 and broker.sent == []


def test_a_job_records_the_size_the_reported_model_runs_at(
    store: Storage, new_job: NewJobOf, service: JobService
) -> None:
    tenant_id = tenant(store)
    weights = service.settings.models["shapes"]
    with store.database.transaction() as session:
        record_loaded_model(session, LoadedModel("shapes", weights, None, "detect", {"0": "circle"}, 32, 640))
    asked = new_job(10, params=JobParams(model="shapes", imgsz=100))
    submission = in_session(store, lambda s: service.submit(s, tenant_id, asked, answered))
    default = in_session(store, lambda s: service.submit(s, tenant_id, new_job(11), answered))
    sizes = [
        in_session(store, lambda s, j=j: service.find(s, j, tenant_id).imgsz)
        for j in (submission.job_id, default.job_id)
    ]
    assert sizes == [128, 640], "rounded up to the stride; the trained size when none is asked for"


def test_a_job_is_found_by_its_tenant_and_admins_only(store: Storage, new_job: NewJobOf, service: JobService) -> None:
    tenant_id, other = tenant(store), tenant(store, "other")
    job_id = in_session(store, lambda s: service.submit(s, tenant_id, new_job(12), answered)).job_id
    assert in_session(store, lambda s: service.find(s, job_id, None)).id == job_id, "None: an admin sees every job"
    for who, which in ((other, job_id), (tenant_id, uuid.uuid4())):
        with pytest.raises(JobNotFound, match="No job with this id"):
            in_session(store, lambda s, who=who, which=which: service.find(s, which, who))


def test_cancel_ends_the_job_and_revokes_its_task_once(
    store: Storage, new_job: NewJobOf, broker: Broker, service: JobService
) -> None:
    tenant_id = tenant(store)
    job_id = in_session(store, lambda s: service.submit(s, tenant_id, new_job(13), answered)).job_id
    cancelled = in_session(store, lambda s: service.cancel(s, job_id, tenant_id).status)
    assert cancelled == "cancelled" and broker.revoked == [str(job_id)]
    with pytest.raises(AlreadyFinished) as refused:
        in_session(store, lambda s: service.cancel(s, job_id, tenant_id))
    assert refused.value.status == "cancelled" and broker.revoked == [str(job_id)]


def test_retry_queues_an_ended_job_again_under_a_new_task_id(
    store: Storage, new_job: NewJobOf, broker: Broker, service: JobService
) -> None:
    tenant_id = tenant(store)
    job_id = in_session(store, lambda s: service.submit(s, tenant_id, new_job(14), answered)).job_id
    with pytest.raises(NotRetryable) as refused:
        in_session(store, lambda s: service.retry(s, job_id, tenant_id))
    assert refused.value.status == "queued"
    in_session(store, lambda s: service.cancel(s, job_id, tenant_id))
    job = in_session(store, lambda s: service.retry(s, job_id, tenant_id))
    (_job, task_id, committed) = broker.sent[-1]
    assert (job.status, job.task_id, job.enqueued_at is not None) == ("queued", task_id, True)
    assert task_id.startswith(f"{job_id}-") and committed


def test_a_retry_the_broker_refuses_stays_queued_for_the_reaper(
    store: Storage, new_job: NewJobOf, broker: Broker, service: JobService
) -> None:
    tenant_id = tenant(store)
    job_id = in_session(store, lambda s: service.submit(s, tenant_id, new_job(15), answered)).job_id
    in_session(store, lambda s: service.cancel(s, job_id, tenant_id))
    broker.down = True
    job = in_session(store, lambda s: service.retry(s, job_id, tenant_id))
    assert (job.status, job.enqueued_at) == ("queued", None), "not withdrawn: beat's reaper sends it"


def test_the_service_imports_no_http() -> None:
    """Importing the service loads neither Flask nor Werkzeug nor any of the app."""
    probe = "import json, sys, jobs.service; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(run.stdout))
    assert "sqlalchemy" in loaded and not {"flask", "werkzeug", "app", "prometheus_client"} & loaded, loaded

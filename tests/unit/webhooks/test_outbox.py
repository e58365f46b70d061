"""The webhook outbox against real PostgreSQL: a delivery row with every end of a job, sent after commit only,
claimed once, recorded with its attempts, stopped by 410 for jobs submitted before it, and swept when overdue."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from accounts.keys import ensure_tenant
from harness.images import image_bytes
from jobs.lifecycle import cancel_job, fail_job
from storage import Storage
from storage.tables import WebhookAttempt, WebhookDelivery
from tests.helpers import complete_job, create_queued_job
from webhooks.outbox import claim, due_deliveries, publish_after_commit, record_attempt
from webhooks.policy import GONE, PENDING, Decision
from webhooks.sender import Outcome

URL = "https://hooks.example/in"
HOLD = timedelta(seconds=10)


@pytest.fixture()
def tenant_id(store: Storage) -> uuid.UUID:
    with store.database.transaction() as session:
        return ensure_tenant(session, "acme").id


def new_job(store: Storage, tenant_id: uuid.UUID, url: str | None = URL) -> uuid.UUID:
    return create_queued_job(store, image_bytes(seed=1), tenant_id=tenant_id, callback_url=url)


def deliveries(store: Storage, job_id: uuid.UUID) -> list[WebhookDelivery]:
    with store.database.transaction() as session:
        query = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.created_at)
        return list(session.scalars(query))


def test_every_end_of_a_job_records_one_pending_delivery(store: Storage, tenant_id: uuid.UUID) -> None:
    succeeded, failed, cancelled = (new_job(store, tenant_id) for _ in range(3))
    silent = new_job(store, tenant_id, url=None)
    complete_job(store, succeeded)
    with store.database.transaction() as session:
        assert fail_job(session, failed, "model_unavailable", "gone")
        assert cancel_job(session, cancelled)
        assert cancel_job(session, silent)
        assert not cancel_job(session, cancelled)  # already ended: no second delivery
    for job_id, status, done in ((succeeded, "succeeded", 1), (failed, "failed", 0), (cancelled, "cancelled", 0)):
        [delivery] = deliveries(store, job_id)
        assert (delivery.url, delivery.event_status, delivery.status) == (URL, status, PENDING)
        assert delivery.counts == {"total": 1, "done": done, "errors": 0}
        assert delivery.tenant_id == tenant_id and delivery.next_attempt_at is not None
    assert deliveries(store, silent) == []


def test_the_task_is_sent_after_commit_and_never_after_rollback(store: Storage, tenant_id: uuid.UUID) -> None:
    sent: list[uuid.UUID] = []
    publish_after_commit(store.database.sessions, sent.append)
    kept, rolled_back = new_job(store, tenant_id), new_job(store, tenant_id)
    with pytest.raises(RuntimeError), store.database.transaction() as session:
        assert cancel_job(session, rolled_back)
        raise RuntimeError("the transaction fails after the job ended")
    assert sent == [] and deliveries(store, rolled_back) == []
    with store.database.transaction() as session:
        assert cancel_job(session, kept)
        assert sent == []  # not before commit
    assert sent == [deliveries(store, kept)[0].id]


def test_a_failed_send_is_left_to_the_sweep(store: Storage, tenant_id: uuid.UUID) -> None:
    def broker_down(_: uuid.UUID) -> None:
        raise ConnectionError("broker down")

    publish_after_commit(store.database.sessions, broker_down)
    job_id = new_job(store, tenant_id)
    with store.database.transaction() as session:
        assert cancel_job(session, job_id)
    [delivery] = deliveries(store, job_id)
    with store.database.transaction() as session:
        session.execute(update(WebhookDelivery).values(next_attempt_at=text("now() - interval '2 minutes'")))
    with store.database.transaction() as session:
        assert due_deliveries(session, timedelta(minutes=1), 10) == [delivery.id]
    with store.database.transaction() as session:  # marked due now: the next sweep waits its grace again
        assert due_deliveries(session, timedelta(minutes=1), 10) == []


def test_a_delivery_is_claimed_once_and_its_attempts_recorded(store: Storage, tenant_id: uuid.UUID) -> None:
    job_id = new_job(store, tenant_id)
    with store.database.transaction() as session:
        cancel_job(session, job_id)
    [delivery] = deliveries(store, job_id)
    with store.database.transaction() as session:
        claimed = claim(session, delivery.id, HOLD)
        assert claim(session, delivery.id, HOLD) is None  # held for the attempt: a duplicate message skips it
    assert claimed is not None and claimed.attempt == 1 and claimed.secret.startswith("whsec_")
    assert not claimed.gone
    with store.database.transaction() as session:
        assert record_attempt(session, claimed, Outcome(12, http_status=503), Decision(PENDING, 0))
        assert not record_attempt(session, claimed, Outcome(12, http_status=503), Decision(PENDING, 0))
    with store.database.transaction() as session:
        again = claim(session, delivery.id, HOLD)
    assert again is not None and again.attempt == 2
    with store.database.transaction() as session:
        record_attempt(session, again, Outcome(7, http_status=410), Decision(GONE))
        attempts = session.execute(
            select(WebhookAttempt.number, WebhookAttempt.http_status, WebhookAttempt.duration_ms)
            .where(WebhookAttempt.delivery_id == delivery.id)
            .order_by(WebhookAttempt.number)
        ).all()
    assert [tuple(a) for a in attempts] == [(1, 503, 12), (2, 410, 7)]
    [delivery] = deliveries(store, job_id)
    assert (delivery.status, delivery.next_attempt_at) == (GONE, None) and delivery.finished_at is not None


def test_410_stops_the_url_for_jobs_submitted_before_it(store: Storage, tenant_id: uuid.UUID) -> None:
    before, gone_job = new_job(store, tenant_id), new_job(store, tenant_id)
    with store.database.transaction() as session:
        cancel_job(session, gone_job)
    [delivery] = deliveries(store, gone_job)
    with store.database.transaction() as session:
        claimed = claim(session, delivery.id, HOLD)
        assert claimed is not None
        record_attempt(session, claimed, Outcome(3, http_status=410), Decision(GONE))
    after = new_job(store, tenant_id)
    other_tenant = create_queued_job(store, image_bytes(seed=2), tenant_id=None, callback_url=URL)
    with store.database.transaction() as session:
        for job_id in (before, after, other_tenant):
            cancel_job(session, job_id)
    with store.database.transaction() as session:
        assert claim(session, deliveries(store, before)[0].id, HOLD).gone
        assert not claim(session, deliveries(store, after)[0].id, HOLD).gone
    assert deliveries(store, other_tenant) == []  # a job without a tenant has no secret, so no webhook

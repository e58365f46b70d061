"""Idempotency keys belong to a tenant: two tenants may use the same key, and neither sees the other's."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, update

from accounts.keys import ensure_tenant
from harness.images import image_bytes
from jobs.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from jobs.idempotency import (
    CLAIM_TIMEOUT,
    Claimed,
    Replay,
    StoredResponse,
    TakenOver,
    attach_job,
    claim_key,
    fingerprint,
    release_key,
    store_response,
)
from jobs.lifecycle import JobParams
from storage import Storage
from storage.tables import IdempotencyKey
from tests.helpers import create_queued_job

REQUEST = fingerprint(JobParams(model="default"), ["ab" * 32])
OTHER_REQUEST = fingerprint(JobParams(model="default", conf=0.5), ["ab" * 32])


def tenant(store: Storage, name: str) -> uuid.UUID:
    with store.database.transaction() as session:
        return ensure_tenant(session, name).id


def test_one_key_is_claimed_answered_and_replayed_per_tenant(store: Storage) -> None:
    alice, bob = tenant(store, "alice"), tenant(store, "bob")
    with store.database.transaction() as session:
        assert claim_key(session, alice, "k", REQUEST) == Claimed()
    with store.database.transaction() as session, pytest.raises(IdempotencyKeyInProgress):
        claim_key(session, alice, "k", REQUEST)
    with store.database.transaction() as session:
        assert claim_key(session, bob, "k", OTHER_REQUEST) == Claimed(), "bob's key is his own"
    with store.database.transaction() as session:
        store_response(session, alice, "k", StoredResponse(202, {"job_id": "a"}))
    with store.database.transaction() as session:
        assert claim_key(session, alice, "k", REQUEST) == Replay(StoredResponse(202, {"job_id": "a"}))
        with pytest.raises(IdempotencyKeyReused):
            claim_key(session, alice, "k", OTHER_REQUEST)
    # alice's answer is not bob's
    with store.database.transaction() as session, pytest.raises(IdempotencyKeyInProgress):
        claim_key(session, bob, "k", OTHER_REQUEST)


def test_release_and_attach_touch_only_the_tenants_key(store: Storage) -> None:
    alice, bob = tenant(store, "alice"), tenant(store, "bob")
    job_id = create_queued_job(store, image_bytes(seed=1), tenant_id=alice)
    with store.database.transaction() as session:
        assert claim_key(session, alice, "k", REQUEST) == Claimed()
        assert claim_key(session, bob, "k", REQUEST) == Claimed()
        attach_job(session, alice, "k", job_id)
    with store.database.transaction() as session:
        release_key(session, alice, "k")  # a key that made its job stays
        release_key(session, bob, "k")
    with store.database.transaction() as session:
        assert claim_key(session, bob, "k", OTHER_REQUEST) == Claimed(), "bob's released key is free again"
        with pytest.raises(IdempotencyKeyInProgress):
            claim_key(session, alice, "k", REQUEST)


def abandon_claims(store: Storage) -> None:
    """As if every claim's request had died a claim timeout ago."""
    with store.database.transaction() as session:
        session.execute(update(IdempotencyKey).values(locked_until=func.now() - CLAIM_TIMEOUT))


def test_an_abandoned_claim_is_taken_over_with_the_job_its_request_made(store: Storage) -> None:
    alice = tenant(store, "alice")
    job_id = create_queued_job(store, image_bytes(seed=1), tenant_id=alice)
    with store.database.transaction() as session:
        assert claim_key(session, alice, "made", REQUEST) == Claimed()
        assert claim_key(session, alice, "not made", REQUEST) == Claimed()
        attach_job(session, alice, "made", job_id)
    abandon_claims(store)
    with store.database.transaction() as session:
        assert claim_key(session, alice, "made", REQUEST) == TakenOver(job_id)
        assert claim_key(session, alice, "not made", REQUEST) == Claimed(), "no job yet: this request makes it"
    with store.database.transaction() as session, pytest.raises(IdempotencyKeyInProgress):  # the claim is held again
        claim_key(session, alice, "made", REQUEST)


def test_the_callback_url_is_part_of_the_request_only_when_given() -> None:
    assert fingerprint(JobParams(model="default"), ["ab" * 32], None) == REQUEST
    assert fingerprint(JobParams(model="default"), ["ab" * 32], "https://hooks.example/in") != REQUEST

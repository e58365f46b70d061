"""Idempotent job submission: the ``Idempotency-Key`` header, after Stripe's rules and the IETF draft.

Keys belong to a tenant: two tenants may use the same key. A key is claimed before
the job is created, in a transaction of its own. The job is linked to the key in the
transaction that creates it, and the response is stored once answered. For 24 hours
the same key then answers:

- with the stored response, when the request is the same (same parameters, same
  files by SHA-256, in order);
- 422 ``idempotency_key_reused`` when the request differs;
- 409 ``idempotency_key_in_progress`` while the first request is still being served.

A request that failed validation never claims its key, and one that failed later
releases it (its withdrawn job takes the key along). A claim whose request died
(an API process killed, the database gone) is taken over once ``CLAIM_TIMEOUT``
has passed: when that request had already created its job, the retry answers
with that job instead of making a second one.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from jobs.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from jobs.lifecycle import NO_MEDIA, JobParams, MediaParams
from storage.tables import IdempotencyKey

KEY_LIFETIME = timedelta(hours=24)
CLAIM_TIMEOUT = timedelta(seconds=60)
# Keys are 1 to 255 printable ASCII characters: the API checks its header against this (app/api/schemas.py).
MAX_KEY_LENGTH = 255
EXPIRED_BATCH = 1000


@dataclass(frozen=True)
class StoredResponse:
    """What the first request with a key was answered."""

    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Claimed:
    """The key is this request's: create the job."""


@dataclass(frozen=True)
class Replay:
    """The key's request was answered before: answer this one the same."""

    response: StoredResponse


@dataclass(frozen=True)
class TakenOver:
    """The key's request died after creating ``job_id`` and before answering: answer with that job."""

    job_id: uuid.UUID


# What claiming a key comes to, unless the key was reused or is still in progress (raised).
Claim = Claimed | Replay | TakenOver


def fingerprint(
    params: JobParams, digests: Sequence[str], callback_url: str | None = None, media: MediaParams = NO_MEDIA
) -> str:
    """A digest of what makes two submissions the same request: parameters, files in order, and the callback URL
    and media parameters (each left out when it is the default, so such a request keeps the digest it had
    before they existed)."""
    request: dict[str, Any] = {"params": asdict(params), "files": list(digests)}
    if callback_url is not None:
        request["callback_url"] = callback_url
    if media != NO_MEDIA:
        request["media"] = asdict(media)
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def claim_key(session: Session, tenant_id: uuid.UUID, key: str, request_fingerprint: str) -> Claim:
    """Claim the tenant's ``key`` for this request; the caller commits.

    Raises :class:`~jobs.errors.IdempotencyKeyReused` when the key was used for another request, and
    :class:`~jobs.errors.IdempotencyKeyInProgress` while its request is still being served. A claim whose
    request was abandoned is taken over: :class:`TakenOver` when that request made
    its job, :class:`Claimed` when it did not.
    """
    claimed = session.execute(
        insert(IdempotencyKey)
        .values(
            tenant_id=tenant_id,
            key=key,
            fingerprint=request_fingerprint,
            locked_until=func.now() + CLAIM_TIMEOUT,
            expires_at=func.now() + KEY_LIFETIME,
        )
        .on_conflict_do_nothing(index_elements=[IdempotencyKey.tenant_id, IdempotencyKey.key])
        .returning(IdempotencyKey.key)
    ).first()
    if claimed is not None:
        return Claimed()
    row = session.execute(
        select(
            IdempotencyKey,
            IdempotencyKey.expires_at < func.now(),
            IdempotencyKey.locked_until < func.now(),
        )
        .where(_is_key(tenant_id, key))
        .with_for_update()
    ).first()
    if row is None:  # deleted since the insert: try once more
        return claim_key(session, tenant_id, key, request_fingerprint)
    existing, expired, abandoned = row
    if expired:
        session.delete(existing)
        session.flush()
        return claim_key(session, tenant_id, key, request_fingerprint)
    if existing.fingerprint != request_fingerprint:
        raise IdempotencyKeyReused
    if existing.response is not None and existing.status_code is not None:
        return Replay(StoredResponse(existing.status_code, existing.response))
    if not abandoned:
        raise IdempotencyKeyInProgress
    existing.locked_until = func.now() + CLAIM_TIMEOUT
    return Claimed() if existing.job_id is None else TakenOver(existing.job_id)


def _is_key(tenant_id: uuid.UUID, key: str) -> ColumnElement[bool]:
    """The condition that selects the tenant's row of ``key``."""
    return and_(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)


def attach_job(session: Session, tenant_id: uuid.UUID, key: str, job_id: uuid.UUID) -> None:
    """Link the key to the job it created, in the job's own transaction."""
    session.execute(update(IdempotencyKey).where(_is_key(tenant_id, key)).values(job_id=job_id))


def store_response(session: Session, tenant_id: uuid.UUID, key: str, response: StoredResponse) -> None:
    """Remember what the request with this key was answered, for its replays."""
    statement = update(IdempotencyKey).where(_is_key(tenant_id, key))
    session.execute(statement.values(status_code=response.status_code, response=response.body))


def release_key(session: Session, tenant_id: uuid.UUID, key: str) -> None:
    """Give up a claim whose request failed without creating a job."""
    session.execute(delete(IdempotencyKey).where(_is_key(tenant_id, key), IdempotencyKey.job_id.is_(None)))


def delete_expired_keys(session: Session) -> int:
    """Delete up to a batch of keys past their lifetime; return how many."""
    expired = select(IdempotencyKey.tenant_id, IdempotencyKey.key).where(IdempotencyKey.expires_at < func.now())
    rows = tuple_(IdempotencyKey.tenant_id, IdempotencyKey.key).in_(expired.limit(EXPIRED_BATCH))
    return session.execute(delete(IdempotencyKey).where(rows)).rowcount

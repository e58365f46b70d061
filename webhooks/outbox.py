"""The webhook outbox: delivery rows written with the end of a job, claimed, recorded and swept.

- :func:`record_job_finished` runs inside the transaction that ends a job (every path
  in ``jobs/lifecycle.py``), so the job's end and its pending delivery commit together
  or not at all. It notes the delivery on the session; :func:`publish_after_commit`
  (installed by each process on its session factory) sends the delivery task once
  that transaction has committed, never before.
- The delivery task takes a due delivery with :func:`claim`, which pushes
  ``next_attempt_at`` past the attempt, so a duplicate message or the sweep leaves it
  alone meanwhile; then :func:`record_attempt` stores the attempt and the next state.
- :func:`due_deliveries` is beat's sweep: pending rows whose ``next_attempt_at`` has
  passed by a grace period (their message was lost, or their back-off was too long to
  hold in the broker), sent again after commit the same way.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, event, exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from storage.tables import Job, Result, Tenant, WebhookAttempt, WebhookDelivery, WebhookGoneUrl
from webhooks.policy import GONE, PENDING, Decision
from webhooks.sender import Outcome

log = logging.getLogger(__name__)

# Where a session keeps the deliveries its transaction recorded, until commit.
_RECORDED = "webhook_deliveries"
# A claim holds a delivery this long past the attempt's timeout (a worker that died mid-attempt frees it then).
CLAIM_MARGIN = timedelta(seconds=30)
# A message that arrives this early for its delivery's next attempt still takes it (clocks differ a little).
EARLY_TOLERANCE = timedelta(seconds=1)

# Publishes the delivery task of one delivery (raises when the broker refuses it).
Publisher = Callable[[uuid.UUID], object]


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for one attempt: where it goes, what it says, who signs it, and whether to stop instead."""

    delivery_id: uuid.UUID
    attempt: int
    job_id: uuid.UUID
    tenant_id: uuid.UUID
    url: str
    event_status: str
    counts: dict[str, int]
    created_at: datetime
    secret: str
    gone: bool


def record_job_finished(session: Session, job_id: uuid.UUID) -> uuid.UUID | None:
    """Add the pending delivery of the job's ``job.finished`` webhook, when it has a callback URL.

    Call in the transaction that ended the job. The delivery's task is sent after that
    transaction commits (:func:`publish_after_commit`), or by the sweep.
    """
    errors = select(func.count()).select_from(Result).where(Result.job_id == job_id, Result.error.is_not(None))
    row = session.execute(
        select(
            Job.callback_url, Job.tenant_id, Job.status, Job.total_files, Job.done_files, errors.scalar_subquery()
        ).where(Job.id == job_id)
    ).first()
    if row is None or row.callback_url is None or row.tenant_id is None:
        return None
    url, tenant_id, status, total, done, failed_files = row
    delivery_id = uuid.uuid4()
    session.execute(
        insert(WebhookDelivery).values(
            id=delivery_id,
            job_id=job_id,
            tenant_id=tenant_id,
            url=url,
            event_status=status,
            counts={"total": total, "done": done, "errors": failed_files},
            next_attempt_at=func.now(),
        )
    )
    _send_after_commit(session, [delivery_id])
    return delivery_id


def _send_after_commit(session: Session, delivery_ids: list[uuid.UUID]) -> None:
    session.info.setdefault(_RECORDED, []).extend(delivery_ids)


def publish_after_commit(sessions: sessionmaker[Session], publish: Publisher) -> None:
    """Send the task of every delivery a transaction of ``sessions`` recorded, once it has committed.

    A failed send is only logged: the delivery is in the database, and the sweep sends it.
    """

    @event.listens_for(sessions, "after_commit")
    def _publish(session: Session) -> None:
        for delivery_id in session.info.pop(_RECORDED, ()):
            try:
                publish(delivery_id)
            except Exception:
                log.warning("could not send webhook delivery %s; the sweep will", delivery_id, exc_info=True)

    @event.listens_for(sessions, "after_soft_rollback")
    def _forget(session: Session, _previous: Any) -> None:
        session.info.pop(_RECORDED, None)


def claim(session: Session, delivery_id: uuid.UUID, hold: timedelta) -> Claimed | None:
    """Take a due, pending delivery for one attempt, holding it ``hold`` + a margin; None when it is not due.

    ``gone`` says the tenant's receiver at this URL answered 410 after the job was submitted.
    """
    claimed = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at <= func.now() + EARLY_TOLERANCE,
        )
        .values(attempts=WebhookDelivery.attempts + 1, next_attempt_at=func.now() + hold + CLAIM_MARGIN)
        .returning(
            WebhookDelivery.attempts,
            WebhookDelivery.job_id,
            WebhookDelivery.tenant_id,
            WebhookDelivery.url,
            WebhookDelivery.event_status,
            WebhookDelivery.counts,
            WebhookDelivery.created_at,
        )
    ).first()
    if claimed is None:
        return None
    attempt, job_id, tenant_id, url, event_status, counts, created_at = claimed
    secret = session.scalar(select(Tenant.webhook_secret).where(Tenant.id == tenant_id))
    submitted = select(Job.created_at).where(Job.id == job_id).scalar_subquery()
    gone = session.scalar(
        select(
            exists().where(
                WebhookGoneUrl.tenant_id == tenant_id, WebhookGoneUrl.url == url, WebhookGoneUrl.gone_at > submitted
            )
        )
    )
    assert secret is not None
    return Claimed(delivery_id, attempt, job_id, tenant_id, url, event_status, counts, created_at, secret, bool(gone))


def finish_gone(session: Session, claimed: Claimed) -> None:
    """End a claimed delivery as ``gone`` without sending it (its URL answered 410 since the job was submitted);
    the claim's attempt is given back, since none was made."""
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == claimed.delivery_id, WebhookDelivery.attempts == claimed.attempt)
        .values(status=GONE, attempts=claimed.attempt - 1, next_attempt_at=None, finished_at=func.now())
    )


def record_attempt(session: Session, claimed: Claimed, outcome: Outcome, decision: Decision) -> bool:
    """Store the attempt and, while the claim still holds the delivery, its next state.

    Returns False when the attempt was recorded before, or another attempt took the
    delivery over meanwhile (its attempt is kept, the newer claim decides the state).
    """
    attempt = (
        pg_insert(WebhookAttempt)
        .values(
            delivery_id=claimed.delivery_id,
            number=claimed.attempt,
            http_status=outcome.http_status,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
        )
        .on_conflict_do_nothing()
        .returning(WebhookAttempt.number)
    )
    if session.execute(attempt).first() is None:
        return False
    pending = decision.status == PENDING
    updated = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == claimed.delivery_id,
            WebhookDelivery.attempts == claimed.attempt,
            WebhookDelivery.status == PENDING,
        )
        .values(
            status=decision.status,
            next_attempt_at=func.now() + timedelta(seconds=decision.delay or 0) if pending else None,
            finished_at=None if pending else func.now(),
        )
        .returning(WebhookDelivery.id)
    ).first()
    if updated is None:
        return False
    if decision.status == GONE:
        statement = pg_insert(WebhookGoneUrl).values(tenant_id=claimed.tenant_id, url=claimed.url)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[WebhookGoneUrl.tenant_id, WebhookGoneUrl.url], set_={"gone_at": func.now()}
            )
        )
    return True


def due_deliveries(session: Session, grace: timedelta, limit: int) -> list[uuid.UUID]:
    """Pending deliveries overdue by ``grace``, oldest first, marked due now (so the next sweep waits ``grace``
    again); their tasks are sent once the caller commits."""
    overdue = and_(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at < func.now() - grace)
    ids = list(
        session.scalars(
            select(WebhookDelivery.id)
            .where(overdue)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).values(next_attempt_at=func.now()))
        _send_after_commit(session, ids)
    return ids

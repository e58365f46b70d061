"""Webhook tasks on the ``webhooks`` queue: deliver one ``job.finished`` event, and beat's sweep.

- ``tasks.webhooks.deliver(delivery_id)``: sent after the commit that ended the job
  (``webhooks.outbox``). It claims the delivery, resolves and vets the URL (no private
  addresses unless ``WEBHOOK_ALLOW_PRIVATE``), POSTs the signed event once, and records
  the attempt. A retry due within :data:`MAX_COUNTDOWN` is sent at once with that
  countdown; a later one is left to the sweep (the broker should not hold a message for
  hours). A webhook never changes its job.
- ``tasks.webhooks.sweep``: every ``WEBHOOK_SWEEP_INTERVAL_SECONDS``, re-sends the task
  of every pending delivery overdue by one interval: a message lost, or a long back-off
  that has passed.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from celery import Task, shared_task

from config.logs import job_context
from config.settings import WebhookSettings
from jobs.messages import DELIVER_WEBHOOK_TASK, SWEEP_WEBHOOKS_TASK
from tasks.runtime import runtime_of
from webhooks.event import event_body, event_json, message_id
from webhooks.guard import Refused, Unresolvable, resolve
from webhooks.outbox import Claimed, claim, due_deliveries, finish_gone, record_attempt
from webhooks.policy import PENDING, decide
from webhooks.sender import Outcome, post

log = logging.getLogger(__name__)

# The longest retry delay sent as a countdown; a later retry is the sweep's (RabbitMQ's
# consumer_timeout, 30 min by default, would cut a worker holding a message longer).
MAX_COUNTDOWN = 300.0
# Deliveries re-sent per sweep (the next sweep takes the rest).
SWEEP_BATCH = 500


@shared_task(name=DELIVER_WEBHOOK_TASK, bind=True)
def deliver(self: Task, delivery_id: str) -> dict[str, Any]:
    """Make the next attempt of a webhook delivery, if it is due; return what became of it."""
    runtime = runtime_of(self.app)
    database, hooks = runtime.storage.database, runtime.settings.webhooks
    with database.transaction() as session:
        claimed = claim(session, uuid.UUID(delivery_id), timedelta(seconds=hooks.timeout_seconds))
    if claimed is None:
        return {"delivery_id": delivery_id, "status": "skipped"}
    with job_context(str(claimed.job_id)):
        if claimed.gone:
            with database.transaction() as session:
                finish_gone(session, claimed)
            log.info("webhook not sent: %s answered 410 Gone since the job was submitted", claimed.url)
            return {"delivery_id": delivery_id, "status": "gone"}
        outcome = attempt(claimed, hooks)
        decision = decide(outcome, claimed.attempt, hooks.retry_schedule)
        with database.transaction() as session:
            recorded = record_attempt(session, claimed, outcome, decision)
        log.info(
            "webhook attempt=%d http_status=%s error=%s status=%s",
            claimed.attempt,
            outcome.http_status,
            outcome.error,
            decision.status,
        )
        if recorded and decision.status == PENDING and decision.delay is not None and decision.delay <= MAX_COUNTDOWN:
            self.apply_async(args=[delivery_id], countdown=decision.delay)
    return {"delivery_id": delivery_id, "status": decision.status, "attempt": claimed.attempt}


def attempt(claimed: Claimed, hooks: WebhookSettings) -> Outcome:
    """One signed POST of the delivery's event to its URL's vetted address (or why none was made)."""
    try:
        target = resolve(claimed.url, hooks.allow_private)
    except Refused as exc:
        return Outcome(0, error=f"refused: {exc}", refused=True)
    except Unresolvable as exc:
        return Outcome(0, error=str(exc))
    event = event_json(claimed.job_id, claimed.event_status, claimed.counts, claimed.created_at, hooks.public_url)
    body = event_body(event)
    return post(target, claimed.secret, message_id(claimed.delivery_id), body, hooks.timeout_seconds)


@shared_task(name=SWEEP_WEBHOOKS_TASK, bind=True)
def sweep(self: Task) -> dict[str, Any]:
    """Re-send the task of every pending delivery overdue by one sweep interval; return their ids."""
    runtime = runtime_of(self.app)
    grace = timedelta(seconds=runtime.settings.webhooks.sweep_interval_seconds)
    with runtime.storage.database.transaction() as session:
        resent = due_deliveries(session, grace, SWEEP_BATCH)
    if resent:
        log.info("re-sent %d webhook deliveries", len(resent))
    return {"resent": [str(delivery_id) for delivery_id in resent]}

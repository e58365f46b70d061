"""What an attempt's outcome means for its delivery: done, stopped, or retried when.

Per the Standard Webhooks recommendations: a 2xx is delivered; 410 Gone stops
sending to that URL; everything else (a connection error or timeout, a 3xx, 429,
5xx and the other 4xx alike) is retried on the schedule (5 s, 5 min, 30 min, 2 h,
5 h, 10 h, 10 h by default), and a ``Retry-After`` on 429 or 5xx pushes the next
attempt later, never sooner. A receiver that answers 400 or 404 today may be fixed
within the hours the schedule spans, so those are retried too. A refused address
(the SSRF guard) is final.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from webhooks.sender import Outcome

# A Retry-After is honoured up to this many seconds (a day), however far it asks.
MAX_RETRY_AFTER = 24 * 3600.0

DELIVERED, GONE, REFUSED, FAILED, PENDING = "delivered", "gone", "refused", "failed", "pending"


@dataclass(frozen=True)
class Decision:
    """The delivery's status after an attempt and, while ``pending``, the seconds until the next one."""

    status: str
    delay: float | None = None


def decide(outcome: Outcome, attempt: int, schedule: Sequence[float]) -> Decision:
    """The decision after attempt ``attempt`` (from 1) got ``outcome``; ``schedule`` holds each retry's delay."""
    status = outcome.http_status
    if outcome.refused:
        return Decision(REFUSED)
    if status is not None and 200 <= status < 300:
        return Decision(DELIVERED)
    if status == 410:
        return Decision(GONE)
    if attempt > len(schedule):
        return Decision(FAILED)
    delay = schedule[attempt - 1]
    if outcome.retry_after is not None and status is not None and (status == 429 or status >= 500):
        delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER))
    return Decision(PENDING, delay)

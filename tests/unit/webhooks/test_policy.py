"""What an attempt's outcome means, and the signature a receiver checks (the spec's algorithm, written out)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from webhooks.policy import DELIVERED, FAILED, GONE, MAX_RETRY_AFTER, PENDING, REFUSED, Decision, decide
from webhooks.sender import Outcome, retry_after_seconds, signed_headers

SCHEDULE = (5.0, 300.0, 1800.0)


@pytest.mark.parametrize(
    ("outcome", "attempt", "expected"),
    [
        (Outcome(5, http_status=200), 1, Decision(DELIVERED)),
        (Outcome(5, http_status=204), 4, Decision(DELIVERED)),
        (Outcome(5, http_status=410), 1, Decision(GONE)),
        (Outcome(0, error="refused: …", refused=True), 1, Decision(REFUSED)),
        (Outcome(5, http_status=500), 1, Decision(PENDING, 5.0)),
        (Outcome(5, http_status=503, retry_after=60), 1, Decision(PENDING, 60.0)),  # later than the schedule
        (Outcome(5, http_status=503, retry_after=1), 2, Decision(PENDING, 300.0)),  # never sooner
        (Outcome(5, http_status=429, retry_after=10**9), 1, Decision(PENDING, MAX_RETRY_AFTER)),
        (Outcome(5, http_status=404, retry_after=60), 1, Decision(PENDING, 5.0)),  # 4xx: retried, no Retry-After
        (Outcome(5, http_status=301), 2, Decision(PENDING, 300.0)),  # redirects are not followed
        (Outcome(10_000, error="timeout"), 3, Decision(PENDING, 1800.0)),
        (Outcome(5, http_status=500), 4, Decision(FAILED)),  # the schedule is spent
    ],
)
def test_decisions(outcome: Outcome, attempt: int, expected: Decision) -> None:
    assert decide(outcome, attempt, SCHEDULE) == expected


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Thu, 01 Jan 2026 00:01:00 GMT", now) == 60
    assert retry_after_seconds("Wed, 31 Dec 2025 00:00:00 GMT", now) == 0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


def test_signature_follows_the_spec() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body, message_id, now = '{"type":"job.finished"}', "msg_1", datetime.now(UTC)
    headers = signed_headers(secret, message_id, body, now)
    signed = f"{message_id}.{int(now.timestamp())}.{body}".encode()
    expected = base64.b64encode(hmac.new(b"k" * 32, signed, hashlib.sha256).digest()).decode()
    assert headers == {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": f"v1,{expected}",
    }
    assert Webhook(secret).verify(body, headers) == {"type": "job.finished"}
    stale = signed_headers(secret, message_id, body, now - timedelta(minutes=10))
    with pytest.raises(Exception, match="too old"):
        Webhook(secret).verify(body, stale)

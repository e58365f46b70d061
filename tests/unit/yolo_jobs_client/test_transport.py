"""The client's retry rules: Retry-After read as seconds or a date, and what is safe to repeat."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import pytest
import requests

from yolo_jobs_client.transport import MAX_DELAY_SECONDS, backoff, never_sent, retry_after


def answer(retry: str | None) -> requests.Response:
    response = requests.Response()
    response.status_code = 503
    if retry is not None:
        response.headers["Retry-After"] = retry
    return response


def test_retry_after_in_seconds_or_as_a_date_capped() -> None:
    assert retry_after(answer("3")) == 3
    assert retry_after(answer("86400")) == MAX_DELAY_SECONDS
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert retry_after(answer(later)) == pytest.approx(20, abs=2)
    assert retry_after(answer("soon")) is None and retry_after(answer(None)) is None
    assert [backoff(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 30.0]


def test_a_refused_connection_was_never_sent() -> None:
    with pytest.raises(requests.ConnectionError) as refused:
        requests.get("http://127.0.0.1:9/", timeout=2)  # the discard port: nothing listens
    assert never_sent(refused.value)
    assert not never_sent(requests.ConnectionError("connection reset by peer"))

"""HTTP with retries: transient failures are tried again, honouring ``Retry-After``.

Retried: connection errors and timeouts, 429, 502, 503 and 504, and 409
``idempotency_key_in_progress``. A request that is not safe to repeat (a POST
without an ``Idempotency-Key``: cancel, retry) is repeated only when the server
cannot have acted on it: 429 and 503 answers, or a connection never made. A
streamed body is built anew for each attempt (``body`` is a factory).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from yolo_jobs_client.errors import Unavailable, error_for

RETRY_STATUSES = frozenset({429, 502, 503, 504})
UNACTED_STATUSES = frozenset({429, 503})  # the server did nothing: safe to repeat any request
IN_PROGRESS = "idempotency_key_in_progress"
MAX_DELAY_SECONDS = 60.0


def retry_after(response: requests.Response) -> float | None:
    """The wait a ``Retry-After`` header asks for (seconds or an HTTP date), capped; None without one."""
    raw = response.headers.get("Retry-After", "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return min(float(raw), MAX_DELAY_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return min(max((when - datetime.now(UTC)).total_seconds(), 0.0), MAX_DELAY_SECONDS)


def backoff(attempt: int) -> float:
    """0.5 s doubling per attempt, at most 30 s, when the server named no wait."""
    return min(0.5 * 2 ** (attempt - 1), 30.0)


def never_sent(exc: requests.RequestException) -> bool:
    """Whether the request failed before the server could have seen it (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _error_code(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


class Transport:
    """A ``requests`` session bound to one API and key, retrying transient failures up to ``attempts`` times."""

    def __init__(
        self,
        url: str,
        api_key: str,
        attempts: int = 8,
        timeout: tuple[float, float] = (10.0, 300.0),
    ) -> None:
        self.base_url = url.rstrip("/")
        self.attempts = max(attempts, 1)
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.session.headers["User-Agent"] = "yolo-jobs-client"

    def close(self) -> None:
        self.session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], tuple[Any, str]] | None = None,
    ) -> requests.Response:
        """Send, retrying what is transient; return a 2xx answer or raise the :class:`ClientError` it stands for.

        ``body`` returns a fresh ``(data, content type)`` per attempt.
        """
        repeatable = method == "GET" or bool(headers and "Idempotency-Key" in headers)
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.attempts
            send_headers = dict(headers or {})
            data = None
            if body is not None:
                data, send_headers["Content-Type"] = body()
            try:
                response = self.session.request(
                    method, self.base_url + path, params=params, headers=send_headers, data=data, timeout=self.timeout
                )
            except requests.RequestException as exc:
                if last or not (repeatable or never_sent(exc)):
                    raise Unavailable(f"Cannot reach {self.base_url}: {exc}") from exc
                time.sleep(backoff(attempt))
                continue
            if response.ok:
                return response
            transient = response.status_code in (RETRY_STATUSES if repeatable else UNACTED_STATUSES)
            if response.status_code == 409 and repeatable and _error_code(response) == IN_PROGRESS:
                transient = True
            if last or not transient:
                raise error_for(response)
            wait = retry_after(response)
            time.sleep(backoff(attempt) if wait is None else wait)

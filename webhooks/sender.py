"""One attempt of a webhook: a signed POST to a vetted address, answered within the timeout.

The body is signed with the tenant's secret by the ``standardwebhooks`` reference
library (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<HMAC-SHA256>``).
The connection goes to the address :mod:`webhooks.guard` vetted, with the URL's host
in ``Host`` and as the TLS server name (certificates are checked against it). Redirects
are not followed (a 3xx is a failed attempt), and the answer's body is never read.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import urllib3
from standardwebhooks import Webhook

from webhooks.guard import Target

USER_AGENT = "yolo-jobs-webhooks/1"


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: an HTTP status (with any Retry-After, in seconds), or an error."""

    duration_ms: int
    http_status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    refused: bool = False


def signed_headers(secret: str, message_id: str, body: str, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of ``body``, signed with ``secret`` (``whsec_…``) at ``now``."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
    }


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header (seconds, or an HTTP date) as seconds from ``now``; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def post(target: Target, secret: str, message_id: str, body: str, timeout: float) -> Outcome:
    """POST ``body`` to ``target`` once, signed; never raises for what the network or the receiver does."""
    now = datetime.now(UTC)
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signed_headers(secret, message_id, body, now),
    }
    pool_class = urllib3.HTTPSConnectionPool if target.scheme == "https" else urllib3.HTTPConnectionPool
    options = {"server_hostname": target.host, "assert_hostname": target.host} if target.scheme == "https" else {}
    pool = pool_class(target.address, target.port, timeout=urllib3.Timeout(total=timeout), retries=False, **options)
    started = time.monotonic()
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body.encode(),
            headers=headers,
            redirect=False,
            retries=False,
            assert_same_host=False,
            preload_content=False,
        )
        status, retry_after = response.status, retry_after_seconds(response.headers.get("Retry-After"), now)
        response.close()
    except urllib3.exceptions.HTTPError as exc:
        return Outcome(_elapsed_ms(started), error=_describe(exc))
    finally:
        pool.close()
    return Outcome(_elapsed_ms(started), http_status=status, retry_after=retry_after)


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _describe(exc: urllib3.exceptions.HTTPError) -> str:
    """A short reason for a failed connection: timeout, refused, TLS, …"""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(exc, urllib3.exceptions.TimeoutError) or isinstance(reason, urllib3.exceptions.TimeoutError):
        return "timeout"
    return f"{type(reason).__name__}: {reason}"[:500]

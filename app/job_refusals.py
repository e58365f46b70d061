"""The HTTP answer to each refusal of the job service (``jobs.errors``): status, code and ``Retry-After``.

One table for the API and the web pages alike (``app.errors.to_api_error`` reads it);
the sentence is the exception's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.errors import (
    AlreadyFinished,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    JobNotFound,
    JobRefused,
    NotRetryable,
    TooManyActiveJobs,
)

# Seconds a client waits before asking again: for a job slot of its tenant, or for a key's first request to end.
ACTIVE_JOBS_RETRY_AFTER = 10
CLAIM_RETRY_AFTER = 2


@dataclass(frozen=True)
class Refusal:
    """How a refusal is answered over HTTP."""

    status: int
    code: str
    retry_after: int | None = None


JOB_REFUSALS: dict[type[JobRefused], Refusal] = {
    JobNotFound: Refusal(404, "not_found"),
    AlreadyFinished: Refusal(409, "already_finished"),
    NotRetryable: Refusal(409, "not_retryable"),
    IdempotencyKeyInProgress: Refusal(409, "idempotency_key_in_progress", CLAIM_RETRY_AFTER),
    IdempotencyKeyReused: Refusal(422, "idempotency_key_reused"),
    TooManyActiveJobs: Refusal(429, "too_many_active_jobs", ACTIVE_JOBS_RETRY_AFTER),
}

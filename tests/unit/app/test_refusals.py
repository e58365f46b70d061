"""Each refusal of the job service gets its HTTP answer from one table: status, code, sentence, ``Retry-After``."""

from __future__ import annotations

import pytest

from app.errors import RETRY_AFTER_SECONDS, ApiError, to_api_error
from app.refusals import ACTIVE_JOBS_RETRY_AFTER, CLAIM_RETRY_AFTER, REFUSALS, REFUSED, Refused
from jobs.errors import (
    AlreadyFinished,
    BrokerUnavailable,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    JobNotFound,
    NotRetryable,
    TooManyActiveJobs,
)
from storage.images import MediaTooLarge, UnsupportedMedia


def all_refusals(kind: type[Exception]) -> set[type[Exception]]:
    return {cls for sub in kind.__subclasses__() for cls in (sub, *all_refusals(sub))}


def test_every_refusal_the_domain_can_raise_has_an_answer() -> None:
    raised = set().union(*(all_refusals(base) for base in REFUSED))
    assert set(REFUSALS) == raised, "a new refusal in jobs, files or resumable errors needs its row in app.refusals"


@pytest.mark.parametrize(
    ("refusal", "status", "code", "message", "retry_after"),
    [
        (JobNotFound(), 404, "not_found", "No job with this id.", None),
        (
            AlreadyFinished("succeeded"),
            409,
            "already_finished",
            "The job already ended succeeded; nothing to cancel.",
            None,
        ),
        (
            NotRetryable("running"),
            409,
            "not_retryable",
            "Only a failed or cancelled job can be retried; this one is running.",
            None,
        ),
        (
            IdempotencyKeyInProgress(),
            409,
            "idempotency_key_in_progress",
            "A request with this Idempotency-Key is still in progress; retry it shortly.",
            CLAIM_RETRY_AFTER,
        ),
        (
            IdempotencyKeyReused(),
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was used for a different request; use a new key.",
            None,
        ),
        (
            TooManyActiveJobs(3),
            429,
            "too_many_active_jobs",
            "This tenant has 3 jobs queued or running; wait for some to finish.",
            ACTIVE_JOBS_RETRY_AFTER,
        ),
        (UnsupportedMedia("not a video").naming("a.txt"), 415, "unsupported_media", "a.txt: not a video.", None),
        (MediaTooLarge("too many pixels").naming("big.mkv"), 413, "image_too_large", "big.mkv: too many pixels.", None),
    ],
)
def test_a_refusal_is_answered_with_its_status_code_and_sentence(
    refusal: Refused, status: int, code: str, message: str, retry_after: int | None
) -> None:
    error = to_api_error(refusal)
    assert (error.status, error.code, error.message, error.retry_after) == (status, code, message, retry_after)


def test_a_broker_that_took_no_task_is_the_brokers_503() -> None:
    error = to_api_error(BrokerUnavailable())
    assert (error.status, error.code, error.retry_after) == (503, "broker_unavailable", RETRY_AFTER_SECONDS)
    assert error.message == to_api_error(ConnectionRefusedError()).message, "the same answer as an unreachable broker"
    assert isinstance(error, ApiError)

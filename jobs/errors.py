"""What the job service (``jobs.service``) raises when it refuses a request, or cannot serve it.

Each refusal is a :class:`JobRefused` whose sentence is for the client; the caller
decides how to answer it (``app/errors.py`` gives each its HTTP status, code and
``Retry-After``). :class:`BrokerUnavailable` is not a refusal but an outage: the
job was withdrawn because its task could not be sent.
"""

from __future__ import annotations


class JobRefused(Exception):
    """The service refused the request; ``str(exc)`` says why, in a sentence for the client."""


class JobNotFound(JobRefused):
    """No job with this id is visible to the tenant."""

    def __init__(self) -> None:
        super().__init__("No job with this id.")


class TooManyActiveJobs(JobRefused):
    """The tenant has ``limit`` jobs queued or running already."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"This tenant has {limit} jobs queued or running; wait for some to finish.")
        self.limit = limit


class IdempotencyKeyReused(JobRefused):
    """The idempotency key was used for a different request."""

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was used for a different request; use a new key.")


class IdempotencyKeyInProgress(JobRefused):
    """A request with this idempotency key is still being served."""

    def __init__(self) -> None:
        super().__init__("A request with this Idempotency-Key is still in progress; retry it shortly.")


class AlreadyFinished(JobRefused):
    """Only a queued or running job can be cancelled; this one ended as ``status``."""

    def __init__(self, status: str) -> None:
        super().__init__(f"The job already ended {status}; nothing to cancel.")
        self.status = status


class NotRetryable(JobRefused):
    """Only a failed or cancelled job can be retried; this one is ``status``."""

    def __init__(self, status: str) -> None:
        super().__init__(f"Only a failed or cancelled job can be retried; this one is {status}.")
        self.status = status


class BrokerUnavailable(Exception):
    """The broker did not take a new job's task (unreachable, refused or unconfirmed); the job was withdrawn."""


class UnknownFiles(JobRefused):
    """Some ``file_ids`` name no file the tenant holds (never stored, deleted, or another tenant's)."""

    def __init__(self, missing: list[str]) -> None:
        named = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        super().__init__(f"No file of this tenant with the id {named}.")
        self.missing = missing


class NotAnImageFile(JobRefused):
    """A referenced file is not an image (a resumable upload may hold any file): a job cannot run on it."""

    def __init__(self, file_id: str) -> None:
        super().__init__(f"The file {file_id} is not an image; a job runs on images only.")
        self.file_id = file_id


class NoFilesLeft(JobRefused):
    """Every file of the job to run again was deleted by its tenant: the new job would have none."""

    def __init__(self) -> None:
        super().__init__("Every file of this job was deleted; there is nothing to run again.")

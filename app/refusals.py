"""The HTTP answer to each refusal of the domain (``jobs.errors``, the model registry's of ``jobs.catalog`` and
``jobs.registry``, ``files.errors``, ``resumable.errors``, and the media refusals of ``storage.images``): status,
code and ``Retry-After``.

One table for the API and the web pages alike (``app.errors.to_api_error`` reads it);
the sentence is the exception's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from files.errors import FileGone, FileNotFound, FileRefused, LargerThanQuota, StorageQuotaExceeded
from files.signing import BadSignature, SignedUrlExpired
from jobs.catalog import ModelRetired, UnknownModel
from jobs.errors import (
    AlreadyFinished,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    JobNotFound,
    JobRefused,
    NoFilesLeft,
    NotAnImageFile,
    NotRetryable,
    TooManyActiveJobs,
    UnknownFiles,
)
from jobs.registry import (
    ConfiguredModel,
    InvalidModelName,
    ModelExists,
    ModelNotFound,
    NotWeights,
    WeightsNotAllowed,
    WeightsNotFound,
)
from resumable.errors import (
    AlreadyComplete,
    ChecksumMismatch,
    ExceedsLength,
    OffsetMismatch,
    PendingUploadsQuotaExceeded,
    PurposeNotAllowed,
    TooManyPendingUploads,
    UnknownPurpose,
    UploadBusy,
    UploadNotFound,
    UploadRefused,
    UploadTooLarge,
)
from storage.images import MediaRefused, MediaTooLarge, UnsupportedMedia

# Seconds a client waits before asking again: for a job slot of its tenant, or for a key's first request to end.
ACTIVE_JOBS_RETRY_AFTER = 10
CLAIM_RETRY_AFTER = 2


@dataclass(frozen=True)
class Refusal:
    """How a refusal is answered over HTTP."""

    status: int
    code: str
    retry_after: int | None = None


# The domain's refusals: every exception it raises to refuse a request derives from one of these.
Refused = JobRefused | FileRefused | UploadRefused | MediaRefused
REFUSED = (JobRefused, FileRefused, UploadRefused, MediaRefused)
# tus 1.0's Checksum extension: "460 Checksum Mismatch" (not in http.HTTPStatus).
CHECKSUM_MISMATCH_STATUS = 460

REFUSALS: dict[type[Refused], Refusal] = {
    JobNotFound: Refusal(404, "not_found"),
    AlreadyFinished: Refusal(409, "already_finished"),
    NotRetryable: Refusal(409, "not_retryable"),
    IdempotencyKeyInProgress: Refusal(409, "idempotency_key_in_progress", CLAIM_RETRY_AFTER),
    IdempotencyKeyReused: Refusal(422, "idempotency_key_reused"),
    TooManyActiveJobs: Refusal(429, "too_many_active_jobs", ACTIVE_JOBS_RETRY_AFTER),
    UnknownFiles: Refusal(422, "unknown_file"),
    NotAnImageFile: Refusal(422, "not_an_image"),
    NoFilesLeft: Refusal(409, "no_files"),
    UnknownModel: Refusal(400, "unknown_model"),
    ModelRetired: Refusal(400, "model_retired"),
    InvalidModelName: Refusal(400, "invalid_parameter"),
    ModelNotFound: Refusal(404, "not_found"),
    ModelExists: Refusal(409, "model_exists"),
    ConfiguredModel: Refusal(409, "configured_model"),
    WeightsNotAllowed: Refusal(422, "weights_not_allowed"),
    WeightsNotFound: Refusal(422, "weights_not_found"),
    NotWeights: Refusal(422, "invalid_weights"),
    FileNotFound: Refusal(404, "not_found"),
    BadSignature: Refusal(403, "bad_signature"),
    SignedUrlExpired: Refusal(403, "url_expired"),
    FileGone: Refusal(410, "gone"),
    LargerThanQuota: Refusal(413, "larger_than_quota"),
    StorageQuotaExceeded: Refusal(507, "storage_quota_exceeded"),
    UploadNotFound: Refusal(404, "not_found"),
    OffsetMismatch: Refusal(409, "offset_mismatch"),
    ExceedsLength: Refusal(409, "exceeds_length"),
    AlreadyComplete: Refusal(409, "upload_complete"),
    UploadBusy: Refusal(423, "upload_busy", CLAIM_RETRY_AFTER),
    UploadTooLarge: Refusal(413, "too_large"),
    ChecksumMismatch: Refusal(CHECKSUM_MISMATCH_STATUS, "checksum_mismatch"),
    PendingUploadsQuotaExceeded: Refusal(507, "pending_uploads_quota_exceeded"),
    TooManyPendingUploads: Refusal(429, "too_many_pending_uploads"),
    UnknownPurpose: Refusal(400, "invalid_parameter"),
    PurposeNotAllowed: Refusal(403, "forbidden"),
    UnsupportedMedia: Refusal(415, "unsupported_media"),
    MediaTooLarge: Refusal(413, "image_too_large"),  # an image's frame or a video's
}

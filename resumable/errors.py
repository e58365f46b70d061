"""What the resumable-upload service refuses, each a :class:`UploadRefused` with a sentence for the client.

``app/refusals.py`` gives each its HTTP status and code, as tus 1.0 asks where it
says (409 for a wrong offset, 460 for a checksum mismatch, 413 past the largest size).
"""

from __future__ import annotations


class UploadRefused(Exception):
    """A request about a resumable upload was refused; ``str(exc)`` says why, in a sentence for the client."""


class UploadNotFound(UploadRefused):
    """No upload with this id is the tenant's (never was, expired, terminated, or another tenant's)."""

    def __init__(self) -> None:
        super().__init__("No upload with this id.")


class UploadTooLarge(UploadRefused):
    """The announced ``Upload-Length`` is over ``MAX_FILE_BYTES``."""

    def __init__(self, length: int, largest: int) -> None:
        super().__init__(f"Upload-Length {length} is over the largest file this service takes, {largest} bytes.")
        self.length, self.largest = length, largest


class OffsetMismatch(UploadRefused):
    """A PATCH's ``Upload-Offset`` is not the bytes the upload holds: the client must ask (HEAD) and resume there."""

    def __init__(self, offset: int, received: int) -> None:
        super().__init__(f"Upload-Offset is {offset}, but the upload holds {received} bytes: resume at {received}.")
        self.offset, self.received = offset, received


class UploadBusy(UploadRefused):
    """Another request is writing to this upload now; this one wrote nothing."""

    def __init__(self) -> None:
        super().__init__("Another request is sending bytes to this upload; ask its offset (HEAD) and resume.")


class ChecksumMismatch(UploadRefused):
    """The piece's bytes do not match its ``Upload-Checksum``: none of them were kept."""

    def __init__(self, algorithm: str) -> None:
        super().__init__(f"The {algorithm} checksum of the bytes sent does not match Upload-Checksum; none were kept.")
        self.algorithm = algorithm


class ExceedsLength(UploadRefused):
    """A PATCH would carry the upload past its announced ``Upload-Length``."""

    def __init__(self, length: int) -> None:
        super().__init__(f"The bytes sent would take the upload past its Upload-Length of {length}.")
        self.length = length


class AlreadyComplete(UploadRefused):
    """The upload already holds all its bytes; there is nothing more to send."""

    def __init__(self) -> None:
        super().__init__("This upload is complete; nothing more can be sent to it.")


class PendingUploadsQuotaExceeded(UploadRefused):
    """The tenant's unfinished uploads would announce more bytes than ``QUOTA_PENDING_UPLOAD_BYTES``."""

    def __init__(self, pending: int, adding: int, limit: int) -> None:
        super().__init__(
            f"This tenant's unfinished uploads hold {pending} bytes of its {limit}-byte allowance; {adding} more do "
            "not fit. Finish or terminate some."
        )
        self.pending, self.adding, self.limit = pending, adding, limit


class TooManyPendingUploads(UploadRefused):
    """The tenant has ``limit`` unfinished uploads already (``QUOTA_PENDING_UPLOADS``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"This tenant has {limit} unfinished uploads; finish or terminate some first.")
        self.limit = limit


class UnknownPurpose(UploadRefused):
    """``Upload-Metadata`` names a ``purpose`` this service does not know (weights is the one it knows)."""

    def __init__(self, purpose: str) -> None:
        super().__init__(f"Upload-Metadata: purpose {purpose[:40]!r} is unknown; the one purpose is 'weights'.")
        self.purpose = purpose


class PurposeNotAllowed(UploadRefused):
    """An upload of model weights (``purpose weights``) from a key that is not an admin's."""

    def __init__(self) -> None:
        super().__init__("Only an admin key may send model weights (Upload-Metadata purpose weights).")

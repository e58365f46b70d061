"""What the file concerns refuse: a file the tenant does not hold, and a tenant out of storage.

Each is a :class:`FileRefused` whose sentence is for the client; ``app/refusals.py``
gives each its HTTP status and code.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence


class FileRefused(Exception):
    """A request about files was refused; ``str(exc)`` says why, in a sentence for the client."""


class FileNotFound(FileRefused):
    """No file with this id is the tenant's (never was, deleted, or another tenant's)."""

    def __init__(self, missing: Sequence[uuid.UUID] = ()) -> None:
        named = ", ".join(str(file_id) for file_id in list(missing)[:5])
        super().__init__(f"No file with this id: {named}." if named else "No file with this id.")
        self.missing = list(missing)


class StorageQuotaExceeded(FileRefused):
    """The tenant's live files would take more than its quota."""

    def __init__(self, used: int, adding: int, quota: int) -> None:
        super().__init__(
            f"This tenant's files and unfinished uploads take {used} bytes of its {quota}-byte quota; {adding} more "
            "do not fit. "
            "Delete files or jobs to make room."
        )
        self.used, self.adding, self.quota = used, adding, quota


class LargerThanQuota(FileRefused):
    """One file is larger than the tenant's whole quota: it could never be stored."""

    def __init__(self, size: int, quota: int) -> None:
        super().__init__(f"A file of {size} bytes can never fit this tenant's {quota}-byte storage quota.")
        self.size, self.quota = size, quota


class FileGone(FileRefused):
    """The tenant's file is known, but retention removed its bytes: nothing can run on it any more."""

    def __init__(self, file_id: uuid.UUID) -> None:
        super().__init__(f"The bytes of file {file_id} were deleted by the retention policy; upload it again.")
        self.file_id = file_id

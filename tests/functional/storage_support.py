"""Rows the tus server writes, made directly for the deletion, retention and quota tests (they do not test it)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func

from storage.tables import ResumableUpload


def resumable_upload(
    tenant_id: uuid.UUID, file_id: uuid.UUID | None, length: int = 0, expires_in: timedelta = timedelta(hours=1)
) -> ResumableUpload:
    """A resumable upload's row: finished with its stored file, or (``file_id`` None) unfinished, nothing received."""
    finished = file_id is not None
    return ResumableUpload(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        length=length,
        received=length if finished else 0,
        filename="upload.bin",
        part_path=f"parts/{uuid.uuid4().hex}",
        file_id=file_id,
        expires_at=func.now() + expires_in,
        finished_at=func.now() if finished else None,
    )

"""Results reused (``RESULT_REUSE``): a file inferred before, the same way, takes its earlier result.

Two results are interchangeable when everything that decides the detections is the
same: the file's bytes, the weights' bytes (their digest, recorded when a worker
loads them, so new weights under an old name never match), conf, iou, the effective
inference size, the backend and its precision. :func:`reuse_key` digests exactly
these; every inferred result stores its key, and :func:`reusable_results` finds, for
a batch of keys in one statement, a result without error in a job of the same
tenant: one tenant never learns what another's files gave.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from storage.tables import Job, Result


@dataclass(frozen=True)
class Reusable:
    """What a new result copies from an earlier one with the same key."""

    width: int | None
    height: int | None
    detections: list[dict[str, Any]]


def reuse_key(
    file_sha256: str, weights_sha256: str | None, conf: float, iou: float, imgsz: int, backend: str, precision: str
) -> str | None:
    """The SHA-256 of ``file|weights|conf|iou|imgsz|backend|precision``; None when the weights have no digest
    (a model built from its YAML name has random weights: nothing it found is reused)."""
    if not weights_sha256 or not file_sha256:
        return None
    # conf and iou come from the jobs table's REAL columns: printed to 6 significant digits, a job's 0.25 is 0.25.
    parts = (file_sha256, weights_sha256, f"{conf:.6g}", f"{iou:.6g}", str(imgsz), backend, precision)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def reusable_results(session: Session, tenant_id: uuid.UUID | None, keys: Collection[str]) -> dict[str, Reusable]:
    """For each of ``keys`` that has one, a result without error with that key in a job of ``tenant_id``
    (of jobs without a tenant when None): one statement however many keys."""
    if not keys:
        return {}
    query = (
        select(Result.reuse_key, Result.width, Result.height, Result.detections)
        .join(Job, Job.id == Result.job_id)
        .where(
            Result.reuse_key.in_(set(keys)),
            Result.error.is_(None),
            Job.tenant_id.is_not_distinct_from(tenant_id),
        )
        .ext(distinct_on(Result.reuse_key))
        .order_by(Result.reuse_key)
    )
    return {key: Reusable(width, height, detections) for key, width, height, detections in session.execute(query)}

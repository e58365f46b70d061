"""The ``job.finished`` event as its receiver sees it: the JSON body and the message id.

Built from the delivery row (the job as it ended) at each attempt, so every retry
sends the same body under the same ``webhook-id``; only the timestamp header and
signature change. Links point at ``PUBLIC_URL``.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

EVENT_TYPE = "job.finished"


def message_id(delivery_id: uuid.UUID) -> str:
    """The ``webhook-id`` of a delivery: the same for each of its attempts, so receivers can deduplicate."""
    return f"msg_{delivery_id.hex}"


def event_json(
    job_id: uuid.UUID, status: str, counts: dict[str, int], ended_at: datetime, public_url: str
) -> dict[str, Any]:
    """``{"type", "timestamp", "data": {"job_id", "status", "counts", "links"}}``."""
    return {
        "type": EVENT_TYPE,
        "timestamp": ended_at.isoformat(),
        "data": {
            "job_id": str(job_id),
            "status": status,
            "counts": counts,
            "links": {"job": f"{public_url}/api/v1/jobs/{job_id}", "page": f"{public_url}/jobs/{job_id}"},
        },
    }


def event_body(event: dict[str, Any]) -> str:
    """The exact text that is signed and sent."""
    return json.dumps(event, separators=(",", ":"), sort_keys=True)

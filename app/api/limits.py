"""/api/v1/limits: what one job submission may hold, so clients split large batches by the server's rules."""

from __future__ import annotations

from flask import Response, jsonify

from app.api import bp
from app.api.schemas import Limits
from app.extensions import get_settings
from app.forms import MAX_FILES_PER_JOB
from storage.images import ACCEPTED_FORMATS


@bp.get("/limits", responses={200: Limits})
def show_limits() -> Response:
    """What one job submission may hold: clients split large batches by these."""
    settings = get_settings()
    return jsonify(
        {
            "max_files_per_job": MAX_FILES_PER_JOB,
            "max_file_ids_per_job": settings.files.max_job_files,
            "max_upload_bytes": settings.api.max_upload_bytes,
            "max_file_bytes": settings.files.max_file_bytes,
            "content_types": [content_type for content_type, _ in ACCEPTED_FORMATS.values()],
        }
    )

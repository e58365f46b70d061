"""/api/v1/jobs/<job_id>/progress: a window of a job's files as they fill in, for the job page to poll.

The job page shows 100 files of a job that may have 10,000 and asks every second or so while it runs: each answer
covers one window of the files (``offset``, ``limit``), and with ``since`` (the ``cursor`` of the previous answer)
only those that changed since, so it stays small (:mod:`jobs.progress`). A file lists its state, its detection
count and its boxes in compact form (class, confidence, corners), which the page draws over the thumbnail; the
class names come once per answer. The job's status and progress, and the parts of the window's files (a video's
segments, for the page's timeline), come with every answer, so one request per poll is all the page makes.
"""

from __future__ import annotations

from flask import Response, jsonify, url_for

from app.api import bp
from app.api.schemas import ErrorBody, JobPath, JobProgress, ProgressQuery
from app.auth import tenant_scope
from app.extensions import db_session
from app.serializers import class_names, file_progress_json, part_json, progress_json
from jobs.progress import files_progress


@bp.get("/jobs/<uuid:job_id>/progress", responses={200: JobProgress, 404: ErrorBody})
def job_progress(path: JobPath, query: ProgressQuery) -> Response:
    """A window of the job's files as they fill in, for a page to poll.

    The files are limit from offset, in the job's order, each with its state (waiting, done, failed, not_reached,
    deleted), its detection count and its boxes; with since (an earlier answer's cursor) only the files that
    changed since. Poll with the cursor of each answer.
    """
    found = files_progress(db_session(), path.job_id, tenant_scope(), query.offset, query.limit, query.since)
    job = found.job
    end = query.offset + query.limit
    return jsonify(
        {
            "job_id": str(job.id),
            "status": job.status,
            "progress": progress_json(job),
            "files": [file_progress_json(job, upload) for upload in found.changed],
            "names": class_names(found.changed),
            "parts": [part_json(part, found.file_ids[part.upload_id]) for part in found.parts],
            "offset": query.offset,
            "limit": query.limit,
            "files_total": job.total_files,
            "cursor": found.cursor.isoformat(),
            "next": url_for("api.job_progress", job_id=job.id, offset=end, limit=query.limit)
            if end < job.total_files
            else None,
        }
    )

"""/api/v1/jobs/<job_id>/files/<file_id>/frames: a video's per-frame detections, a time range at a time.

A two-hour video has up to 216,000 analysed frames (``jobs.frames``): the web player asks for the seconds it is
about to show, a script pages through with ``next``; no answer holds more than ``limit`` frames.
"""

from __future__ import annotations

import math

from flask import Response, jsonify, url_for

from app.api import bp
from app.api.schemas import ErrorBody, FramePage, FramesQuery, JobFilePath
from app.auth import tenant_scope
from app.errors import ApiError
from app.extensions import db_session, get_job_service
from jobs.catalog import model_classes
from jobs.frames import frames_between


@bp.get("/jobs/<uuid:job_id>/files/<uuid:file_id>/frames", responses={200: FramePage, 404: ErrorBody})
def video_frames(path: JobFilePath, query: FramesQuery) -> Response:
    """The analysed frames of one of the job's videos in a range of time, in time order.

    The frames with `start <= time < end` (seconds), at most `limit` of them; `next` asks for the rest of the
    range. Each frame lists its boxes as a job's image results do, with `track` once the job's tracks are assigned.
    """
    session = db_session()
    job, upload = get_job_service().find_upload(session, path.job_id, path.file_id, tenant_scope())
    if upload is None or upload.file is None or not upload.file.media:
        raise ApiError(404, "not_found", "The job has no such video.")
    end = query.end if query.end is not None else float("inf")
    rows = frames_between(session, upload.id, query.start, end, query.limit + 1)
    names = model_classes(session, job.model)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    body = {
        "file_id": str(path.file_id),
        "start": query.start,
        "end": query.end,
        "frames": [{"frame": r.frame, "time": r.time, "detections": r.detections(names)} for r in rows],
        "next": None,
    }
    if more:
        body["next"] = url_for(
            "api.video_frames",
            job_id=path.job_id,
            file_id=path.file_id,
            start=repr(math.nextafter(rows[-1].time, math.inf)),
            **({"end": query.end} if query.end is not None else {}),
            limit=query.limit,
        )
    return jsonify(body)

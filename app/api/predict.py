"""POST /api/v1/predict: one image's detections in the answer, for clients that expect a synchronous call
(Roboflow's and BentoML's ``/predict``).

It is a facade over a durable job: the image becomes a job exactly as POST /api/v1/jobs makes one
(``app.job_actions.submit``: the same form parameters, Idempotency-Key, quotas and tenant, the task sent
after the commit), then the request waits for that job to end (``jobs.waiting``) for ``timeout`` seconds,
at most ``PREDICT_MAX_WAIT_SECONDS``. So nothing is lost when the client gives up or the wait runs out:
the job runs to its end and stays findable, and the answer is then POST /jobs' own 202.

A video, or more than one file, is refused before any job is made: their results are not one list of
boxes, and POST /jobs takes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from flask import current_app, jsonify, request, url_for
from werkzeug.datastructures import FileStorage

from app import job_actions
from app.api import bp
from app.api.jobs import SUBMISSION_REFUSALS, Answer, accepted_answer
from app.api.schemas import PredictForm, Prediction, PredictionError, Submission, SubmitHeaders
from app.auth import tenant_scope
from app.errors import ApiError, api_error_of
from app.extensions import db_session, get_job_service, get_settings
from app.forms import clean_filename
from app.quotas import limit_submissions
from app.serializers import parameters_json, result_json
from jobs.idempotency import StoredResponse
from jobs.service import Submission as NewSubmission
from jobs.waiting import Waiter
from storage.images import HEADER_BYTES, UnsupportedMedia, format_by_magic
from storage.tables import TERMINAL_STATUSES

FIELD = "file"
ONLY_AN_IMAGE = "POST /api/v1/predict takes one image (JPEG, PNG, WebP, BMP or TIFF); send videos to POST /api/v1/jobs"
# Where each app keeps its waiter (app.extensions): one per gunicorn process.
WAITER = "yolo_jobs.predict_waiter"
PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": PredictForm.model_json_schema(),
            "encoding": {FIELD: {"contentType": "application/octet-stream"}},
        }
    },
}


@bp.post(
    "/predict",
    responses={200: Prediction, 202: Submission, **SUBMISSION_REFUSALS, 500: PredictionError},
    openapi_extensions={"requestBody": PREDICT_BODY},
)
@limit_submissions
def predict(header: SubmitHeaders) -> Answer:
    """Detect objects in one image and answer them: a job is made as POST /api/v1/jobs makes one, and awaited.

    200: the image's detections with the job's id and URL. Past `timeout` seconds (at most
    PREDICT_MAX_WAIT_SECONDS, its default): 202 with the job, as POST /api/v1/jobs answers; the job runs on.
    A job that ended otherwise answers its id and URL with the error: 500 with the job's own error code when
    it failed, 409 `no_result` (cancelled), 422 `undecodable`. 400 `no_image` (no `file` part), `too_many_files`
    (more than one file), `invalid_parameter`; 415 `unsupported_media` (not an image); and the refusals of a
    submission: 409 and 422 for an Idempotency-Key, 413, 429, 507.
    """
    part = _one_image()
    seconds = min(_timeout(request.form), get_settings().api.predict_max_wait_seconds)
    submission = job_actions.submit([part], request.form, header.idempotency_key)
    status = submission.answer.body["status"]
    if seconds > 0:
        status = _waiter().wait(db_session(), submission.job_id, seconds)
    if status not in TERMINAL_STATUSES:
        return accepted_answer(replace(submission, answer=_with_status(submission.answer, status)))
    return _ended(submission)


def _one_image() -> FileStorage:
    """The request's one file part, named ``file``, if its bytes start like an image (an empty one is refused
    with the submission's own 400)."""
    parts = list(request.files.items(multi=True))
    if len(parts) > 1:
        raise ApiError(400, "too_many_files", f"Send one image, in one part named '{FIELD}'.")
    if not parts or parts[0][0] != FIELD:
        raise ApiError(400, "no_image", f"Attach one image in a part named '{FIELD}'.")
    part = parts[0][1]
    head = part.stream.read(HEADER_BYTES)
    part.stream.seek(0)
    if head and format_by_magic(head) is None:
        raise api_error_of(UnsupportedMedia(ONLY_AN_IMAGE).naming(clean_filename(part.filename, 0)))
    return part


def _timeout(form: Mapping[str, str]) -> float:
    """The ``timeout`` field in seconds (0 or more; infinity when absent, then capped by the caller)."""
    raw = form.get("timeout", "").strip()
    if not raw:
        return math.inf
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:  # NaN too
        raise ApiError(400, "invalid_parameter", "timeout must be a number of seconds, 0 or more.")
    return seconds


def _waiter() -> Waiter:
    """This app's waiter: one request thread of the process is always left to requests that do not wait."""
    waiter: Waiter | None = current_app.extensions.get(WAITER)
    if waiter is None:
        waiter = current_app.extensions.setdefault(WAITER, Waiter(get_settings().api.threads - 1))
    return waiter


def _with_status(answer: StoredResponse, status: str) -> StoredResponse:
    """The 202 a submission was answered with, saying the job's status now."""
    return StoredResponse(answer.status_code, {**answer.body, "status": status})


def _ended(submission: NewSubmission) -> Answer:
    """The answer for a job that has ended: its image's detections, or why there are none."""
    found = get_job_service().find_page(db_session(), submission.job_id, tenant_scope(), 1, 0)
    job, upload = found.job, found.uploads[0]
    body = {"job_id": str(job.id), "status": job.status, "url": url_for("api.show_job", job_id=job.id)}
    headers = {"Idempotent-Replayed": "true"} if submission.replayed else {}
    if job.status == "failed":
        error = {"code": job.error_code or "failed", "message": job.error_message or "The job failed."}
        return jsonify({"error": error, **body}), 500, headers
    if job.status == "cancelled" or upload.result is None:
        cancelled = job.status == "cancelled"
        message = "The job was cancelled before the image had a result." if cancelled else "The image was deleted."
        error = {"code": "no_result", "message": message}
        return jsonify({"error": error, **body}), 409, headers
    result = result_json(upload)
    if result["error"]:
        error = {"code": "undecodable", "message": f"{upload.filename}: {result['error']}."}
        return jsonify({"error": error, **body}), 422, headers
    return jsonify({**body, "parameters": parameters_json(job), **result}), 200, headers

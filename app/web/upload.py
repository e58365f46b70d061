"""``/``: the upload form. A plain form post creates the job and redirects to its page.

The form says what the chosen model finds (its classes, as the workers reported them,
and a note on the bundled model) and which inference size it runs at by default.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Response, current_app, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import RequestEntityTooLarge

from app import job_actions
from app.errors import ApiError, to_api_error
from app.extensions import db_session, get_job_service, get_settings
from app.quotas import limit_submissions
from app.web import bp
from jobs.catalog import ModelInfo
from jobs.lifecycle import JobParams

# Sentences for the form where the API's wording speaks of fields.
FORM_MESSAGES = {"no_image": "Choose at least one image to upload."}

FormPage = tuple[str, int, dict[str, str]]


def readable_size(size: int) -> str:
    return f"{size / 2**20:.3g} MiB" if size >= 2**20 else f"{size / 2**10:.3g} KiB"


def size_rule(model: ModelInfo) -> str:
    """The form's sentence on a model's inference size: its default, and the stride sizes are rounded to."""
    if model.record is None or not model.record.stride:
        return ""
    stride = model.record.stride
    example = model.size_for(stride * 3 + 1)
    return (
        f"This model’s default is {model.size_for(None)}; a size that is not a multiple of {stride} is rounded up "
        f"(e.g. {stride * 3 + 1} runs at {example})."
    )


def render_form(error: ApiError | None = None, fields: Mapping[str, str] | None = None) -> FormPage:
    """The form, with ``error`` as a sentence above it and the user's choices kept."""
    max_bytes = current_app.config["MAX_CONTENT_LENGTH"]
    settings = get_settings()
    chosen = {"model": settings.default_model, "conf": JobParams.conf, "iou": JobParams.iou, **(fields or {})}
    chosen["model"] = settings.registry_name(str(chosen["model"])) or settings.default_model
    page = render_template(
        "upload.html",
        models=get_job_service().models_of(db_session()),
        size_rule=size_rule,
        fields=chosen,
        max_bytes=max_bytes,
        max_size=readable_size(max_bytes),
        error=FORM_MESSAGES.get(error.code, error.message) if error else None,
    )
    headers = {"Retry-After": str(error.retry_after)} if error and error.retry_after else {}
    return page, error.status if error else 200, headers


@bp.get("/")
def upload_form() -> FormPage:
    return render_form()


@bp.post("/")
@limit_submissions
def upload() -> Response | FormPage:
    try:
        files, form = request.files.getlist("image"), request.form
        submission = job_actions.submit(files, form)
    except Exception as exc:  # every failure reads as a sentence above the form
        return render_form(to_api_error(exc), request.form)
    return redirect(url_for("web.job_page", job_id=submission.job_id), 303)


@bp.errorhandler(RequestEntityTooLarge)
def upload_too_large(_exc: RequestEntityTooLarge) -> FormPage:
    limit = readable_size(current_app.config["MAX_CONTENT_LENGTH"])
    return render_form(ApiError(413, "too_large", f"The upload is larger than {limit}; send fewer or smaller images."))


@bp.errorhandler(CSRFError)
def form_expired(_exc: CSRFError) -> FormPage:
    message = "The form expired or did not come from this site; choose your images and send them again."
    return render_form(ApiError(400, "csrf_failed", message), request.form)

"""``/``: the upload form. A form post creates the job and redirects to its page.

The form takes images and videos, and a video's settings (its sample rate, time range and tracks) and a large
image's tiles, named and bounded as the API's (``app.forms``).
Without JavaScript the form posts the files themselves (multipart, ``MAX_UPLOAD_BYTES`` in all).
With it (``app/static/upload.js``), each file goes first to the tus endpoint, ``/api/v1/uploads``,
resumably and with a progress bar, and the form then posts the stored files' ids as ``file_id``
fields instead of the images. The form says what the chosen model finds (its classes, as the
workers reported them, and a note on the bundled model) and which inference size it runs at by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flask import Response, current_app, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import RequestEntityTooLarge

from app import job_actions
from app.errors import ApiError, to_api_error
from app.extensions import db_session, get_job_service, get_settings
from app.forms import FPS_RANGE, SECONDS_RANGE, TILES_RANGE, YES
from app.quotas import limit_submissions
from app.web import bp
from config.settings import model_name
from jobs.catalog import ModelInfo
from jobs.lifecycle import JobParams

# Sentences for the form where the API's wording speaks of fields.
FORM_MESSAGES = {"no_image": "Choose at least one image to upload."}

FormPage = tuple[str, int, dict[str, str]]
# How much of a file one PATCH carries: a connection lost mid-file costs at most this much again.
CHUNK_BYTES = 32 * 2**20


def readable_size(size: int) -> str:
    if size >= 2**30:
        return f"{size / 2**30:.3g} GiB"
    return f"{size / 2**20:.3g} MiB" if size >= 2**20 else f"{size / 2**10:.3g} KiB"


@dataclass(frozen=True)
class ResumableUploads:
    """What the form's script needs to send files by tus: where, in what pieces, and the limits it checks first."""

    url: str
    chunk_bytes: int
    max_file_bytes: int
    max_files: int
    expiry_hours: int

    @property
    def max_file_size(self) -> str:
        return readable_size(self.max_file_bytes)


def size_rule(model: ModelInfo) -> str:
    """The form's sentence on a model's inference size: the one it runs at (an export made at a fixed size), or
    its default and the stride sizes are rounded to."""
    if model.fixed_imgsz is not None:
        return f"This model runs at {model.fixed_imgsz} whatever size is asked."
    if model.record is None or not model.record.stride:
        return ""
    stride = model.record.stride
    example = model.size_for(stride * 3 + 1)
    return (
        f"This model’s default is {model.size_for(None)}; a size that is not a multiple of {stride} is rounded up "
        f"(e.g. {stride * 3 + 1} runs at {example})."
    )


def chosen_model(named: str, models: list[ModelInfo], default: str) -> str:
    """The model the form shows chosen: ``named`` (an alias stands for its model) while new jobs may ask for it
    (``models``: the registry's active ones, registered at run time too), else ``default``."""
    name = model_name(named.strip())
    return name if any(model.name == name for model in models) else default


def render_form(error: ApiError | None = None, fields: Mapping[str, str] | None = None) -> FormPage:
    """The form, with ``error`` as a sentence above it and the user's choices kept."""
    settings = get_settings()
    models = get_job_service().models_of(db_session())
    chosen = {"model": settings.default_model, "conf": JobParams.conf, "iou": JobParams.iou, **(fields or {})}
    chosen["model"] = chosen_model(str(chosen["model"]), models, settings.default_model)
    files = settings.files
    uploads = ResumableUploads(
        url_for("api.create_upload"), CHUNK_BYTES, files.max_file_bytes, files.max_job_files, files.upload_expiry_hours
    )
    page = render_template(
        "upload.html",
        uploads=uploads,
        models=models,
        size_rule=size_rule,
        fields=chosen,
        max_size=readable_size(current_app.config["MAX_CONTENT_LENGTH"]),
        fps_range=FPS_RANGE,
        seconds_range=SECONDS_RANGE,
        tiles_range=TILES_RANGE,
        yes=YES,
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
        submission = job_actions.submit(files, form, file_ids=form.getlist("file_id"))
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

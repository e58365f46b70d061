"""Reading a job submission out of a request: parameters and uploaded files, each checked.

Every problem is an :class:`app.errors.ApiError` with a 4xx status and a sentence
the client can act on; nothing here touches the database or the broker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from werkzeug.datastructures import FileStorage

from app.errors import ApiError
from config import Settings
from jobs.lifecycle import JobParams, NewUpload
from storage.blobs import IncomingFile
from storage.images import ImageTooLarge, NotAnImage, identify_image
from storage.tables import JOB_STATUSES

MAX_FILES_PER_JOB = 100
MAX_FILENAME_LENGTH = 255
# The bounds of the optional parameters (inclusive); the OpenAPI document states them from here.
CONF_RANGE = (0.0, 1.0)
IOU_RANGE = (0.0, 1.0)
IMGSZ_RANGE = (32, 4096)
FLOAT32_SMALLEST_NORMAL = 1.1754943508222875e-38
# The longest callback URL a job may carry (schema.sql's jobs_callback_url_check).
MAX_CALLBACK_URL_LENGTH = 2048


def whole_number(raw: str, name: str, low: int, high: int) -> int:
    """``raw`` as an integer in ``[low, high]``; 400 ``invalid_parameter`` otherwise."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(high)) or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be a whole number between {low} and {high}.")
    return int(raw)


def _number(form: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = form.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be a number between {low} and {high}.") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be a number between {low} and {high}.")
    # The jobs table keeps it as a 32-bit REAL, which refuses a non-zero value under its smallest normal
    # number; as a threshold on 32-bit scores such a value is 0.
    return 0.0 if abs(value) < FLOAT32_SMALLEST_NORMAL else value


def parse_params(form: Mapping[str, str], settings: Settings) -> JobParams:
    """Validate the optional ``model`` (a registry name or an alias; the job records the registry name),
    ``conf``, ``iou`` and ``imgsz`` fields."""
    named = form.get("model", "").strip() or settings.default_model
    model = settings.registry_name(named)
    if model is None:
        known = ", ".join(settings.models)
        raise ApiError(400, "unknown_model", f"Unknown model {named[:100]!r}; known models: {known}.")
    raw_imgsz = form.get("imgsz", "").strip()
    imgsz = whole_number(raw_imgsz, "imgsz", *IMGSZ_RANGE) if raw_imgsz else None
    return JobParams(
        model=model,
        conf=_number(form, "conf", JobParams.conf, *CONF_RANGE),
        iou=_number(form, "iou", JobParams.iou, *IOU_RANGE),
        imgsz=imgsz,
    )


def parse_callback_url(form: Mapping[str, str]) -> str | None:
    """The optional ``callback_url``: an absolute http(s) URL with a host, no credentials, at most 2048 characters.

    Where it may point (no private addresses) is decided at delivery time, when its name is resolved.
    """
    raw = form.get("callback_url", "").strip()
    if not raw:
        return None
    problem = "callback_url must be an absolute http or https URL with a host"
    if len(raw) > MAX_CALLBACK_URL_LENGTH:
        raise ApiError(400, "invalid_parameter", f"callback_url must be at most {MAX_CALLBACK_URL_LENGTH} characters.")
    if not raw.isascii() or any(not ch.isprintable() or ch.isspace() for ch in raw):
        raise ApiError(400, "invalid_parameter", f"{problem}, in printable ASCII without spaces.")
    try:
        parts = urlsplit(raw)
        host, _port = parts.hostname, parts.port  # the port raises ValueError when out of range or not a number
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{problem}.") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ApiError(400, "invalid_parameter", f"{problem}.")
    if parts.username is not None or parts.password is not None:
        raise ApiError(400, "invalid_parameter", "callback_url must not carry a user name or password.")
    return raw


def clean_filename(name: str | None, position: int) -> str:
    """The client's filename for display only: printable, bounded, never a path."""
    cleaned = "".join(ch for ch in (name or "") if ch.isprintable()).strip()
    cleaned = cleaned.replace("\\", "/").rsplit("/", 1)[-1]
    return cleaned[:MAX_FILENAME_LENGTH] or f"image-{position + 1}"


def identify_uploads(files: Sequence[FileStorage]) -> list[NewUpload]:
    """Check that each part is a non-empty accepted image; raise 400/413/415 otherwise."""
    if not files:
        raise ApiError(400, "no_image", "Attach at least one file in an 'image' field.")
    if len(files) > MAX_FILES_PER_JOB:
        raise ApiError(400, "too_many_files", f"A job takes at most {MAX_FILES_PER_JOB} files.")
    uploads = []
    for position, part in enumerate(files):
        incoming = part.stream
        if not isinstance(incoming, IncomingFile):
            raise ApiError(400, "no_image", "The 'image' field must be a file upload.")
        name = clean_filename(part.filename, position)
        if incoming.size == 0:
            raise ApiError(400, "empty_file", f"{name} is empty.")
        try:
            info = identify_image(incoming)
        except NotAnImage as exc:
            raise ApiError(415, "unsupported_media_type", f"{name}: {exc}.") from None
        except ImageTooLarge as exc:
            raise ApiError(413, "image_too_large", f"{name}: {exc}.") from None
        uploads.append(NewUpload(incoming, name, info))
    return uploads


def status_filter(values: Sequence[str]) -> tuple[str, ...]:
    """The job statuses asked for in ``status`` arguments, repeated or comma-separated (none: every status);
    400 ``invalid_parameter`` for one that is not a status."""
    statuses = tuple(dict.fromkeys(s.strip() for value in values for s in value.split(",") if s.strip()))
    unknown = [s for s in statuses if s not in JOB_STATUSES]
    if unknown:
        message = f"Unknown status {unknown[0][:40]!r}; a status is one of {', '.join(JOB_STATUSES)}."
        raise ApiError(400, "invalid_parameter", message)
    return statuses

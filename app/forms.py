"""Reading a job submission out of a request: parameters, uploaded files and stored files' ids, each checked.

A submission is a multipart form (``image`` parts and ``file_id`` fields) or a JSON
body (``file_ids``); both come down to the same fields, checked the same way.

Every problem is an :class:`app.errors.ApiError` with a 4xx status and a sentence
the client can act on; nothing here touches the database or the broker.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import IO, Any
from urllib.parse import urlsplit

from werkzeug.datastructures import FileStorage

from app.errors import ApiError, api_error_of
from config import Settings
from config.settings import model_name
from jobs.catalog import IMGSZ_RANGE
from jobs.lifecycle import NO_MEDIA, JobParams, MediaParams, NewUpload
from storage.blobs import IncomingFile
from storage.images import MAX_PIXELS, MediaRefused
from storage.media import identify_file
from storage.tables import JOB_STATUSES

MAX_FILES_PER_JOB = 100
MAX_FILENAME_LENGTH = 255
# The bounds of the optional parameters (inclusive); the OpenAPI document states them from here.
CONF_RANGE = (0.0, 1.0)
IOU_RANGE = (0.0, 1.0)
FLOAT32_SMALLEST_NORMAL = 1.1754943508222875e-38
# The longest callback URL a job may carry (schema.sql's jobs_callback_url_check).
MAX_CALLBACK_URL_LENGTH = 2048
# A video's sample rate, and the longest time range a job may name (seconds); tiles along an image's longest side.
FPS_RANGE = (0.01, 240.0)
SECONDS_RANGE = (0.0, 7 * 24 * 3600.0)
TILES_RANGE = (1, 99)
# The media parameters a form names, and the MediaParams field each sets.
MEDIA_PARAMETERS = {
    "fps": "sample_fps",
    "start": "start_seconds",
    "end": "end_seconds",
    "track": "track",
    "tiles": "tiles",
}
# The parameters a submission (or a rerun) may set, besides its files.
PARAMETERS = ("model", "conf", "iou", "imgsz", "callback_url", *MEDIA_PARAMETERS)
# How a form says yes or no (an HTML checkbox sends "on"; JSON's true and false arrive as "true" and "false").
YES, NO = ("true", "1", "on", "yes"), ("false", "0", "off", "no")
# A JSON submission's body: its parameters and up to MAX_JOB_FILES ids, each at most this long as JSON.
JSON_BODY_BASE_BYTES = 16 * 1024
JSON_BYTES_PER_FILE_ID = 64


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
    """Validate the optional ``model`` (a name; the job service checks it against the model registry, and the
    job records the registry's name of an alias), ``conf``, ``iou`` and ``imgsz`` fields."""
    changes = {k: v for k, v in parse_param_changes(form).items() if k not in MEDIA_PARAMETERS.values()}
    return JobParams(**{"model": settings.default_model, **changes})


def parse_param_changes(form: Mapping[str, str]) -> dict[str, Any]:
    """The parameters among ``model``, ``conf``, ``iou`` and ``imgsz`` that ``form`` sets (not blank), each
    validated as :func:`parse_params` does: what a rerun changes of its original."""
    changes: dict[str, Any] = {}
    named = form.get("model", "").strip()
    if named:
        changes["model"] = model_name(named)
    for name, bounds in (("conf", CONF_RANGE), ("iou", IOU_RANGE)):
        if form.get(name, "").strip():
            changes[name] = _number(form, name, 0.0, *bounds)
    raw_imgsz = form.get("imgsz", "").strip()
    if raw_imgsz:
        changes["imgsz"] = whole_number(raw_imgsz, "imgsz", *IMGSZ_RANGE)
    return changes | parse_media_changes(form)


def parse_media(form: Mapping[str, str]) -> MediaParams:
    """Validate the optional media parameters: a video's ``fps`` (sample rate; every frame when absent), ``start``
    and ``end`` (seconds), ``track`` (assign track ids), and an image's ``tiles`` (``auto``, ``off`` or how many
    tiles along its longest side)."""
    return replace(NO_MEDIA, **parse_media_changes(form))


def parse_media_changes(form: Mapping[str, str]) -> dict[str, Any]:
    """The media parameters ``form`` sets (not blank), by their ``MediaParams`` names, each validated."""
    changes: dict[str, Any] = {}
    if form.get("fps", "").strip():
        changes["sample_fps"] = _number(form, "fps", 0.0, *FPS_RANGE)
    for name in ("start", "end"):
        if form.get(name, "").strip():
            changes[MEDIA_PARAMETERS[name]] = _number(form, name, 0.0, *SECONDS_RANGE)
    start, end = changes.get("start_seconds"), changes.get("end_seconds")
    if end is not None and (end <= 0 or (start is not None and end <= start)):
        raise ApiError(400, "invalid_parameter", "end must be after start (and after 0 s).")
    raw_track = form.get("track", "").strip().lower()
    if raw_track:
        if raw_track not in YES + NO:
            raise ApiError(400, "invalid_parameter", "track must be true or false.")
        changes["track"] = raw_track in YES
    raw_tiles = form.get("tiles", "").strip().lower()
    if raw_tiles:
        if raw_tiles in ("auto", "off"):
            changes["tiles"] = raw_tiles
        else:
            low, high = TILES_RANGE
            if not (raw_tiles.isascii() and raw_tiles.isdigit() and low <= int(raw_tiles) <= high):
                message = f"tiles must be auto, off, or a whole number of tiles between {low} and {high}."
                raise ApiError(400, "invalid_parameter", message)
            changes["tiles"] = str(int(raw_tiles))
    return changes


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


def parse_file_ids(values: Sequence[str], most: int) -> list[uuid.UUID]:
    """The stored files' ids a submission names, in order (400 ``invalid_parameter`` for one that is not an
    id, 400 ``too_many_files`` past ``most``)."""
    if len(values) > most:
        raise ApiError(400, "too_many_files", f"A job names at most {most} stored files.")
    ids = []
    for value in values:
        try:
            ids.append(uuid.UUID(value.strip()))
        except (ValueError, AttributeError):
            raise ApiError(400, "invalid_parameter", "Each file id must be a stored file's id (a UUID).") from None
    return ids


def json_body_limit(max_job_files: int) -> int:
    """The largest JSON submission read: its parameters and ``max_job_files`` ids, with room to spare."""
    return JSON_BODY_BASE_BYTES + JSON_BYTES_PER_FILE_ID * max_job_files


def read_json_fields(
    stream: IO[bytes], length: int | None, limit: int, with_file_ids: bool = True
) -> tuple[dict[str, str], list[str]]:
    """A JSON submission's parameters (as form fields) and ``file_ids`` (a rerun's body has none), read from at
    most ``limit`` bytes of ``stream``: 413 ``too_large`` past it, 400 ``invalid_json`` or
    ``invalid_parameter`` for a body that is not an object of the documented fields."""
    if length is not None and length > limit:
        raise ApiError(413, "too_large", f"A JSON submission is at most {limit} bytes; this one is {length}.")
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "too_large", f"A JSON submission is at most {limit} bytes.")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: arrays nested deeper than the parser goes
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    unknown = sorted(set(body) - {*PARAMETERS, *(["file_ids"] if with_file_ids else [])})
    if unknown:
        raise ApiError(400, "invalid_parameter", f"Unknown field {unknown[0][:40]!r} in the body.")
    file_ids = body.get("file_ids", [])
    if not isinstance(file_ids, list) or not all(isinstance(i, str) for i in file_ids):
        raise ApiError(400, "invalid_parameter", "file_ids must be a list of stored files' ids.")
    fields = {}
    for name in PARAMETERS:
        value = body.get(name)
        if value is None:
            continue
        textual = name in ("model", "callback_url", "tiles")
        numeric = isinstance(value, int | float) and not isinstance(value, bool) and not textual
        if name == "track" and not isinstance(value, bool):
            raise ApiError(400, "invalid_parameter", "track must be true or false.")
        if not (isinstance(value, str) or numeric or name == "track" or (name == "tiles" and type(value) is int)):
            kind = "a string" if textual else "a number"
            raise ApiError(400, "invalid_parameter", f"{name} must be {kind}.")
        fields[name] = value if isinstance(value, str) else json.dumps(value)
    return fields, file_ids


def identify_uploads(
    files: Sequence[FileStorage], references: int = 0, max_pixels: int = MAX_PIXELS
) -> list[NewUpload]:
    """Check that each part is a non-empty accepted image or video (``storage.media.identify_file``, a video's
    frames capped at ``max_pixels``: ``WORKER_MAX_IMAGE_PIXELS``, whose default this is); raise 400 otherwise,
    or the refusal's own status (``app/refusals.py``: 413 ``image_too_large``, 415 ``unsupported_media``).
    A submission with no image must name ``references`` stored files."""
    if not files and not references:
        raise ApiError(
            400, "no_image", "Attach at least one file in an 'image' field, or name stored files by 'file_id'."
        )
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
            info = identify_file(incoming, max_pixels)
        except MediaRefused as refused:
            raise api_error_of(refused.naming(name)) from None
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

"""The API's shapes as pydantic models: what ``/api/v1/openapi.json`` is generated from.

flask-openapi3 reads them off the views (``path``, ``query`` and ``header``
annotations, validated before the view runs) and off each route's ``responses``.
Pydantic writes JSON Schema 2020-12, the dialect of OpenAPI 3.1, so nothing here is
translated. The serializers (:mod:`app.serializers`) still build the bodies;
Schemathesis checks every answer of a live API against these schemas, so the two
cannot drift apart unseen.

The submission form is described, not validated, here: its fields are checked by
:mod:`app.forms`, which the web form shares, with the bounds declared there.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, model_validator

from app.converters import CANONICAL_UUID
from app.forms import (
    CONF_RANGE,
    FPS_RANGE,
    IMGSZ_RANGE,
    IOU_RANGE,
    MAX_CALLBACK_URL_LENGTH,
    MAX_FILES_PER_JOB,
    SECONDS_RANGE,
)
from app.serializers import FILES_PAGE, MAX_FILES_PAGE
from inference.defaults import DEFAULT_CONF, DEFAULT_IOU
from jobs.exports import FORMATS
from jobs.idempotency import MAX_KEY_LENGTH
from jobs.progress import FILE_STATES
from jobs.registry import NAME as MODEL_NAME
from jobs.video_exports import VIDEO_FORMATS
from storage.images import ACCEPTED_FORMATS
from storage.tables import JOB_STATUSES

BEARER = "bearerAuth"
SECURITY_SCHEMES = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`flask --app app keys create`), sent as `Authorization: Bearer <key>`.",
    }
}
# Every /api/v1 operation needs a key, but the document itself.
SECURITY = [{BEARER: []}]

# What the API stores, and so serves back: decided from the bytes.
IMAGE_TYPES = tuple(media_type for media_type, _magic in ACCEPTED_FORMATS.values())
MAX_PAGE_SIZE = 100  # jobs per page at most
MAX_OFFSET = 10**9

JobStatus = Literal[JOB_STATUSES]  # type: ignore[valid-type]
# One status or several, comma-separated.
STATUS_LIST = "^({0})(,({0}))*$".format("|".join(JOB_STATUSES))


def header(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response header as OpenAPI describes one (for a model's ``openapi_extra``)."""
    return {name: {"description": description, "schema": schema or {"type": "string"}}}


RETRY_AFTER = header("Retry-After", "Seconds to wait before trying again.", {"type": "integer"})
LOCATION = header("Location", "The job's URL.")
ATTACHMENT = header("Content-Disposition", "`attachment`, with the file's name.")


# Errors


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable, machine-readable code, e.g. `not_found` or `invalid_parameter`.")
    message: str = Field(description="A sentence for people.")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer of the API."""

    model_config = ConfigDict(openapi_extra={"headers": RETRY_AFTER})
    error: ErrorDetail


# Requests


# Ids are routed in one spelling only (app/converters.py): any other is 404.
ID_SCHEMA = {"type": "string", "format": "uuid", "pattern": f"^{CANONICAL_UUID}$"}


class JobPath(BaseModel):
    job_id: uuid.UUID = Field(description="The job's id.", json_schema_extra=ID_SCHEMA)


class FilePath(BaseModel):
    file_id: uuid.UUID = Field(description="The stored file's id.", json_schema_extra=ID_SCHEMA)


class JobFilePath(JobPath, FilePath):
    pass


class RequestParameters(BaseModel):
    """A model of a request's query or headers, whose JSON schema is made once per set of arguments.

    flask-openapi3 asks for the model's schema on every request it validates (for each field's
    ``type``); pydantic would build it anew each time, half a millisecond of a submission's CPU.
    Each caller gets its own copy: the document's builder edits what it is given.
    """

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in _SCHEMAS:
            _SCHEMAS[key] = super().model_json_schema(*args, **kwargs)
        return copy.deepcopy(_SCHEMAS[key])


# The schemas of RequestParameters' models, by model and arguments.
_SCHEMAS: dict[tuple[type[RequestParameters], tuple[Any, ...], tuple[tuple[str, Any], ...]], dict[str, Any]] = {}


class PageQuery(RequestParameters):
    limit: int = Field(20, ge=1, le=MAX_PAGE_SIZE, description="Jobs per page.")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Jobs to skip, newest first.")
    status: list[str] = Field(
        default_factory=list,
        description="Only jobs in these statuses: repeated, or comma-separated (`queued,running`).",
        json_schema_extra={"items": {"type": "string", "pattern": STATUS_LIST}},
    )


class ExportOptions(RequestParameters):
    """What every export format takes (each format's own operation, /export/<format>)."""

    file_id: uuid.UUID | None = Field(None, description="A video job: which video (default: its first).")
    partial: bool = Field(False, description="Export a failed or cancelled job's analysed images too.")


class YoloOptions(ExportOptions):
    confidence: bool = Field(False, description="Add the confidence as a sixth column of YOLO labels.")


class ExportQuery(YoloOptions):
    format: Literal[tuple(dict.fromkeys((*FORMATS, *VIDEO_FORMATS)))] = Field(  # type: ignore[misc]
        description="The file format (see docs/clients.md, Export formats)."
    )


class SignedFileQuery(RequestParameters):
    """What a signed file URL carries besides its file (files/signing.py)."""

    tenant: uuid.UUID = Field(description="The tenant whose file it is.", json_schema_extra=ID_SCHEMA)
    expires: int = Field(ge=0, le=2**40, description="When the URL stops working, in Unix seconds.")
    signature: str = Field(
        max_length=128, description="HMAC-SHA256 of the tenant, the file and the expiry, in lowercase hex."
    )


class SubmitHeaders(RequestParameters):
    idempotency_key: str | None = Field(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[\x20-\x7e]+$",
        description="Makes a retried submission answer the first one's response instead of making a second job.",
    )


class JobOptions(BaseModel):
    """A job's optional parameters, in a form or a JSON body."""

    model: str | None = Field(None, description="A model from `GET /api/v1/models`; default: the default model.")
    conf: float | None = Field(
        None, ge=CONF_RANGE[0], le=CONF_RANGE[1], description=f"Confidence threshold ({DEFAULT_CONF})."
    )
    iou: float | None = Field(None, ge=IOU_RANGE[0], le=IOU_RANGE[1], description=f"NMS IoU threshold ({DEFAULT_IOU}).")
    imgsz: int | None = Field(None, ge=IMGSZ_RANGE[0], le=IMGSZ_RANGE[1], description="Inference size in pixels.")
    callback_url: str | None = Field(
        None,
        max_length=MAX_CALLBACK_URL_LENGTH,
        description="An http(s) URL that gets a signed `job.finished` webhook when the job ends (docs/clients.md).",
    )
    fps: float | None = Field(
        None, ge=FPS_RANGE[0], le=FPS_RANGE[1], description="A video's sample rate, frames per second (every frame)."
    )
    start: float | None = Field(
        None, ge=SECONDS_RANGE[0], le=SECONDS_RANGE[1], description="A video's first second analysed (0)."
    )
    end: float | None = Field(
        None, gt=SECONDS_RANGE[0], le=SECONDS_RANGE[1], description="A video's end, excluded (its duration)."
    )
    track: bool | None = Field(None, description="Assign track ids across each video (ByteTrack); false.")
    tiles: str | None = Field(
        None,
        pattern=r"^(auto|off|[1-9][0-9]?)$",
        description="Run large images as overlapping tiles: `auto` (over 4× the input size), `off`, or N along the "
        "longest side (off).",
    )


FILE_IDS = (
    "Stored files this tenant holds (finished uploads, or files of its earlier jobs), by id, in order; "
    "at most `MAX_JOB_FILES` (10000 by default). 422 `unknown_file` for an id it does not hold, "
    "`not_an_image` for a file that is not an image; 410 `gone` once retention removed its bytes."
)


class SubmitForm(JobOptions):
    """multipart/form-data: the images, each a part named `image`, and/or stored files named by `file_id`
    fields (images first, then the files in the order given), and the optional parameters."""

    image: list[bytes] = Field(
        default_factory=list,
        max_length=MAX_FILES_PER_JOB,
        description="Images (JPEG, PNG, WebP, BMP, TIFF) and videos (what FFmpeg decodes), told by their bytes.",
    )
    file_id: list[uuid.UUID] = Field(default_factory=list, description=FILE_IDS)


class SubmitJson(JobOptions):
    """application/json: a job on stored files only, and the optional parameters."""

    model_config = ConfigDict(extra="forbid")
    file_ids: list[uuid.UUID] = Field(min_length=1, description=FILE_IDS)


class RerunOptions(JobOptions):
    """What a rerun changes (the original's value for any left out), as a form or a JSON body."""

    model_config = ConfigDict(extra="forbid")


class FramesQuery(RequestParameters):
    start: float = Field(0.0, ge=0, description="The first second of the range (stream time).")
    end: float | None = Field(None, gt=0, description="The end of the range, excluded (default: the video's end).")
    limit: int = Field(500, ge=1, le=5000, description="Frames in this answer at most.")


class JobQuery(RequestParameters):
    files_limit: int = Field(FILES_PAGE, ge=1, le=MAX_FILES_PAGE, description="Files (and their results) listed.")
    files_offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Files to skip, in the job's order.")


# Responses


class FrameProgress(BaseModel):
    """A job's sampled video frames."""

    done: int = Field(description="Frames analysed.")
    total: int = Field(description="Frames to analyse: estimated from the probe until each segment has listed its own.")
    failed: int = Field(description="Frames that could not be decoded (a corrupt stretch): never counted as done.")


class Progress(BaseModel):
    done: int
    total: int
    frames: FrameProgress | None = Field(None, description="Present for a job with videos.")


class UploadedFile(BaseModel):
    file_id: uuid.UUID
    filename: str
    sha256: str
    size: int
    content_type: str
    deduplicated: bool = Field(description="The bytes were already stored (same SHA-256).")
    media: dict[str, Any] | None = Field(None, description="A video's probe (container, codec, size, fps, frames…).")


class DeletedFile(BaseModel):
    """A file of the job that its tenant deleted: only its name is left, and no result."""

    filename: str
    deleted: Literal[True]
    deleted_at: datetime | None


def link(operation_id: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link to ``operation_id`` with its parameters taken from this response's body (``/job_id``)."""
    values = {name: f"$response.body#{pointer}" for name, pointer in parameters.items()}
    return {"operationId": operation_id, "parameters": values}


# Where a new job leads: what clients (and Schemathesis' stateful phase) do next with its ids.
SUBMISSION_LINKS = {
    "ShowJob": link("show_job", job_id="/job_id"),
    "CancelJob": link("cancel_job", job_id="/job_id"),
    "RetryJob": link("retry_job", job_id="/job_id"),
    "RerunJob": link("rerun_job", job_id="/job_id"),
    "ShowFile": link("show_file", file_id="/files/0/file_id"),
    "FileContent": link("file_content", file_id="/files/0/file_id"),
    "AnnotatedFile": link("annotated_file", job_id="/job_id", file_id="/files/0/file_id"),
    "Thumbnail": link("thumbnail", job_id="/job_id", file_id="/files/0/file_id"),
    "ExportJob": link("export_job", job_id="/job_id"),
}


class Submission(BaseModel):
    """The accepted job."""

    model_config = ConfigDict(
        openapi_extra={
            "headers": {
                **LOCATION,
                **header("Idempotent-Replayed", "`true` when this answer is a replay under an Idempotency-Key."),
            },
            "links": SUBMISSION_LINKS,
        }
    )
    job_id: uuid.UUID
    status: JobStatus
    files: list[UploadedFile] = Field(description=f"The first {FILES_PAGE} files (`GET` the job for the others).")
    files_total: int


class Box(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float


class Detection(BaseModel):
    """One detection, as Ultralytics' `Results.summary()` gives it, in the original image's pixels."""

    model_config = ConfigDict(populate_by_name=True)
    name: str
    class_id: int = Field(alias="class")
    confidence: float
    box: Box


class FileResult(BaseModel):
    file_id: uuid.UUID
    filename: str
    width: int | None
    height: int | None
    detections: list[Detection]
    error: str | None = Field(description="Why this file has no detections (it could not be decoded).")
    cached: bool = Field(description="Taken from an earlier result of the same bytes, weights and parameters.")
    frames_url: str | None = Field(None, description="A video's per-frame detections, paged by time.")


class TrackedDetection(Detection):
    track: int | None = Field(None, description="The track id (a job with `track=true`), the same across the video.")


class Frame(BaseModel):
    frame: int = Field(description="The frame's number in the video (its time × the video's average rate).")
    time: float = Field(description="Seconds from the video's start.")
    detections: list[TrackedDetection]


class FramePage(BaseModel):
    """A time range of a video's analysed frames."""

    file_id: uuid.UUID
    start: float
    end: float | None
    frames: list[Frame]
    next: str | None = Field(description="The rest of the range, when `limit` cut it.")


class JobSummary(BaseModel):
    job_id: uuid.UUID
    status: JobStatus
    model: str
    progress: Progress
    created_at: datetime
    finished_at: datetime | None
    url: str


class Parameters(BaseModel):
    model: str
    conf: float
    iou: float
    imgsz: int | None
    fps: float | None
    start: float | None
    end: float | None
    track: bool
    tiles: str


class Part(BaseModel):
    """A piece of a large file that runs as a task of its own: a video's segment, an image's tiles, a finish."""

    file_id: uuid.UUID | None
    kind: Literal["segment", "tiles", "finish"]
    number: int
    start: float | None = Field(description="A segment's first second.")
    end: float | None = Field(description="A segment's end, excluded.")
    status: Literal["queued", "running", "done", "failed"]
    done: int = Field(description="Frames (or tiles) done.")
    total: int | None = Field(description="Frames (or tiles) to do, once the part has listed them.")
    failed: int = Field(description="Frames that could not be decoded.")
    error: str | None


WebhookStatus = Literal["pending", "delivered", "failed", "gone", "refused"]


class WebhookAttempt(BaseModel):
    attempted_at: datetime
    http_status: int | None = Field(description="The receiver's answer; null when none came.")
    error: str | None = Field(description="Why no answer came, or why the delivery was refused.")
    duration_ms: int


class Webhook(BaseModel):
    """The job's `job.finished` webhook and its latest delivery."""

    url: str
    status: WebhookStatus | None = Field(description="Null until the job ends.")
    event_id: str | None = Field(description="The `webhook-id` header, the same on every retry.")
    next_attempt_at: datetime | None
    attempts: list[WebhookAttempt]


class Job(JobSummary):
    """Everything about one job."""

    model_config = ConfigDict(openapi_extra={"headers": LOCATION})
    parameters: Parameters
    started_at: datetime | None
    enqueued_at: datetime | None
    attempts: int
    task_id: str = Field(description="Its latest Celery task.")
    lease_expires_at: datetime | None
    error: ErrorDetail | None
    files: list[UploadedFile | DeletedFile] = Field(description="A page of the job's files (`files_limit`).")
    results: list[FileResult] = Field(description="The results of this page's files so far.")
    files_total: int
    files_offset: int
    files_limit: int
    webhook: Webhook | None = Field(description="Null when the job has no `callback_url`.")
    parts: list[Part] = Field(description="The parts of this page's files (a video's segments, for its timeline).")


class JobPage(BaseModel):
    jobs: list[JobSummary]
    total: int
    limit: int
    offset: int
    next: str | None = Field(None, description="The next page's URL; absent on the last page.")


class Limits(BaseModel):
    max_files_per_job: int = Field(description="The most images one multipart submission may upload.")
    max_file_ids_per_job: int = Field(description="`MAX_JOB_FILES`: the most stored files one job may name.")
    max_upload_bytes: int = Field(description="The largest request body, all images together.")
    max_file_bytes: int = Field(description="`MAX_FILE_BYTES`: the largest file a resumable upload may hold.")
    content_types: list[str] = Field(description="The image types a submission may hold.")


class StorageUsage(BaseModel):
    used_bytes: int = Field(description="Bytes of the live files this tenant holds, each stored file counted once.")
    quota_bytes: int = Field(description="`QUOTA_STORAGE_BYTES`: past it a new file gets 507.")
    pending_upload_bytes: int = Field(description="Bytes announced by this tenant's unfinished resumable uploads.")
    pending_upload_quota_bytes: int = Field(description="`QUOTA_PENDING_UPLOAD_BYTES`: past it a new upload gets 507.")


class Account(BaseModel):
    tenant: str
    webhook_secret: str = Field(description="`whsec_…`: the key that signs this tenant's webhooks.")
    storage: StorageUsage


class FileInfo(BaseModel):
    file_id: uuid.UUID
    filename: str
    sha256: str
    size: int
    content_type: str
    width: int | None = Field(description="An image's upright width; null for a file that is not an image.")
    height: int | None = Field(description="An image's upright height; null for a file that is not an image.")
    media: dict[str, Any] | None = Field(None, description="A video's probe (container, codec, size, fps, frames…).")
    created_at: datetime
    deleted_at: datetime | None = Field(description="When retention deleted the bytes.")
    content_url: str


class Model(BaseModel):
    name: str
    aliases: list[str] = Field(description="Other names a job may ask for this model by (`default` for `shapes`).")
    default: bool
    weights: str | None = Field(description="The weights path; admin keys only.")
    weights_present: bool
    task: str | None
    classes: dict[str, str] | None = Field(description="Class names by id, as the workers reported them.")
    stride: int | None = Field(description="The model's largest stride: `imgsz` is rounded up to a multiple of it.")
    imgsz: int | None = Field(description="The size a job runs at when it asks for none.")
    weights_sha256: str | None
    loaded_at: datetime | None
    fixed_imgsz: int | None = Field(
        description="An export made at one size runs at it whatever a job asks, and the job records it; known once a "
        "worker loaded the model."
    )
    source: Literal["settings", "api"] = Field(description="Who registered it: `YOLO_MODELS`, or an admin by the API.")
    registered_at: datetime | None
    retired_at: datetime | None = Field(description="Once set, the model takes no new job (400 `model_retired`).")


class ModelList(BaseModel):
    models: list[Model] = Field(description="Every registered model, the default first; retired ones too.")


# Exports that are JSON, described for the clients generated from the document (which parse them into these
# shapes): the fields every such file has, and any others the format adds (extra="allow").


class CocoImage(BaseModel):
    """An analysed image, or a video's sampled frame."""

    model_config = ConfigDict(extra="allow")
    id: int
    file_name: str
    width: int
    height: int


class CocoAnnotation(BaseModel):
    """A box: `bbox` is x, y, width, height in pixels; `score` the detection's confidence."""

    model_config = ConfigDict(extra="allow")
    id: int
    image_id: int
    category_id: int = Field(description="The model's class index plus one.")
    bbox: list[float] = Field(min_length=4, max_length=4)
    area: float
    iscrowd: int
    score: float


class CocoCategory(BaseModel):
    id: int
    name: str
    supercategory: str


class CocoExport(BaseModel):
    """COCO detection JSON, as pycocotools and the labelling tools read it; a video's adds `videos` (TAO's fields)."""

    model_config = ConfigDict(
        extra="allow", openapi_extra={"description": "COCO detection JSON, as an attachment.", "headers": ATTACHMENT}
    )
    info: dict[str, Any] = Field(description="The job it was exported from: `job_id`, `model`, `status`.")
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory]


class LabelStudioTask(BaseModel):
    """A Label Studio task: the image (`data.image`, a URL) and one prediction of `rectanglelabels`."""

    model_config = ConfigDict(extra="allow")
    data: dict[str, Any]
    predictions: list[dict[str, Any]]


class LabelStudioTasks(RootModel[list[LabelStudioTask]]):
    """Label Studio tasks with pre-annotations, one per analysed image, to import as a JSON file."""

    model_config = ConfigDict(
        openapi_extra={"description": "Label Studio tasks (JSON), as an attachment.", "headers": ATTACHMENT}
    )


# Any body as bytes. Declared before a binary answer's own types: a client generator reads an answer by the first
# content type it knows (openapi-python-client: JSON, text/*, this), whatever type the answer then comes in, and
# knows no application/zip or image/png, so a JSON or text type first would have it parse a zip as JSON.
ANY_BYTES = "application/octet-stream"
BINARY = {"type": "string", "format": "binary"}


def binary(description: str, *media_types: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response whose body is bytes of one of ``media_types``, which generated clients hand over as bytes."""
    content = {media_type: {"schema": BINARY} for media_type in (ANY_BYTES, *media_types)}
    return {"description": description, "content": content, "headers": headers or {}}


def text(description: str, media_type: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response whose body is text of ``media_type`` (text/csv, text/plain), which generated clients read as a
    string."""
    content = {media_type: {"schema": {"type": "string"}}}
    return {"description": description, "content": content, "headers": headers or {}}


# POST /api/v1/predict (app/api/predict.py)


class PredictForm(JobOptions):
    """multipart/form-data: one image in a part named `file`, the job's optional parameters (as a
    submission takes them), and how long to wait for the job."""

    file: bytes = Field(description="One image (JPEG, PNG, WebP, BMP, TIFF), told by its bytes.")
    timeout: float | None = Field(
        None,
        ge=0,
        description="Seconds to wait for the job to end: at most, and by default, `PREDICT_MAX_WAIT_SECONDS` (30); "
        "0 answers 202 at once.",
    )


REPLAYED = header("Idempotent-Replayed", "`true` when an earlier request with this Idempotency-Key made the job.")
# Where a prediction leads: its job, the durable record of it.
PREDICTION_LINKS = {
    "ShowJob": link("show_job", job_id="/job_id"),
    "ShowFile": link("show_file", file_id="/file_id"),
    "AnnotatedFile": link("annotated_file", job_id="/job_id", file_id="/file_id"),
    "ExportJob": link("export_job", job_id="/job_id"),
}


class Prediction(FileResult):
    """The image's detections, as its job's result says them, and the job that made them."""

    model_config = ConfigDict(openapi_extra={"headers": REPLAYED, "links": PREDICTION_LINKS})
    job_id: uuid.UUID
    status: Literal["succeeded"]
    url: str = Field(description="The job's URL: its durable record.")
    parameters: Parameters


class PredictionError(ErrorBody):
    """The job ended without detections for the image: 500 when it failed (its error as the job records it),
    409 `no_result` when it was cancelled, 422 `undecodable` when the image could not be decoded."""

    job_id: uuid.UUID
    status: JobStatus
    url: str = Field(description="The job's URL.")


# The job page's live view (app/api/progress.py) and the zip of annotated images (app/api/annotated.py).


class ProgressQuery(RequestParameters):
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Files to skip, in the job's order.")
    limit: int = Field(FILES_PAGE, ge=1, le=FILES_PAGE, description="Files in the window.")
    since: AwareDatetime | None = Field(
        None, description="The cursor of an earlier answer: list only the window's files that changed since."
    )


class ProgressBox(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_id: int = Field(alias="class")
    confidence: float
    box: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in upright image pixels.")


class FileProgress(BaseModel):
    """One file of the window: its state, and its boxes once it has a result."""

    position: int = Field(description="Its place in the job, from 0.")
    file_id: uuid.UUID | None = Field(description="Null once its owner deleted the file.")
    state: Literal[FILE_STATES] = Field(  # type: ignore[valid-type]
        description=(
            "waiting: not analysed yet; done: analysed (its boxes follow); failed: it could not be decoded; "
            "not_reached: the job ended (cancelled or failed) before it; deleted: its owner deleted the file."
        )
    )
    width: int | None
    height: int | None
    detections: int = Field(description="How many objects were found.")
    boxes: list[ProgressBox]
    error: str | None


class JobProgress(BaseModel):
    """A window of a job's files as they fill in."""

    job_id: uuid.UUID
    status: JobStatus
    progress: Progress
    files: list[FileProgress] = Field(description="The window's files (with since: those that changed since).")
    names: dict[str, str] = Field(description="The class name of each class index that the boxes use.")
    parts: list[Part] = Field(description="The parts of the window's files (a video's segments).")
    offset: int
    limit: int
    files_total: int
    cursor: datetime = Field(description="The since of the next poll.")
    next: str | None = Field(description="The next window's URL; null at the last.")


class AnnotatedQuery(RequestParameters):
    partial: bool = Field(False, description="A failed or cancelled job: draw the images it did analyse.")


# The model registry (POST /api/v1/models, GET /api/v1/models/{name}, POST .../retire).
class ModelPath(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="The model's name (an alias stands for its model).")


class ModelRegistration(BaseModel):
    """A model to register: its name and its weights, either a path on the server or a stored file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=f"^{MODEL_NAME.pattern}$",
        description="What jobs ask for it by: 1 to 64 letters, digits, `.`, `_` or `-`; never used before.",
    )
    weights: str | None = Field(
        None,
        max_length=4096,
        description="An absolute path on the server, under `STORAGE_ROOT` (the shared volume) or the bundled "
        "model's folder: `.pt`, `.onnx`, `.engine`, or an OpenVINO export folder.",
    )
    file_id: uuid.UUID | None = Field(
        None,
        description=(
            "Instead of `weights`: a stored file, a resumable upload of a .pt or .onnx declared with "
            "Upload-Metadata purpose weights."
        ),
        json_schema_extra=ID_SCHEMA,
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelRegistration:
        if (self.weights is None) == (self.file_id is None):
            raise ValueError("give either weights (a path on the server) or file_id (a stored file)")
        return self

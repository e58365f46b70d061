"""Every setting of yolo-jobs, declared once here: its environment variable, type, default, bounds and meaning.

Each process builds one :class:`Settings` at start-up (``Settings.from_env()``) and
passes it on: ``create_app(settings)``, the Celery app in ``tasks``, gunicorn's
configuration and the maintenance commands. A bad value stops that start-up with
a :class:`SettingsError` that names the variable and what it allows. Defaults work on a
developer machine with PostgreSQL, RabbitMQ and Redis on localhost; OpenShift sets the
same variables from a ConfigMap and Secrets. Fields only the API, only the workers or one
concern use are grouped (:class:`ApiSettings`, :class:`WorkerSettings`, ...).

The declarations are pydantic fields: the alias is the variable, the description its one
line of meaning, ``ge``/``le`` its bounds. ``docs/configuration.md`` is generated from
them (``python -m config.reference``), so a setting is explained here and nowhere else.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from config.paths import BUNDLED_MODEL, VAR_DIR

# The bundled model's name in the registry, and the older names still accepted wherever a model is
# named (the API, the form, YOLO_MODELS, YOLO_DEFAULT_MODEL, jobs queued before the rename): jobs
# record the registry name.
BUNDLED_MODEL_NAME = "shapes"
MODEL_ALIASES = {"default": BUNDLED_MODEL_NAME}


def model_name(named: str) -> str:
    """The registry name ``named`` stands for: an alias's model, else itself."""
    return MODEL_ALIASES.get(named, named)


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


def shown(*, default: str | None = None, allowed: str | None = None) -> dict[str, str]:
    """What the configuration table shows where the declaration alone cannot say it (``json_schema_extra``):
    a default that is derived or depends on the machine, or the form of a value that is parsed."""
    return {key: value for key, value in (("default", default), ("allowed", allowed)) if value is not None}


def _model_registry(spec: object) -> object:
    """``name=path,name=path`` as an ordered mapping of model names to weights paths."""
    if not isinstance(spec, str):
        return spec
    registry: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"entry {item!r} is not name=path")
        name = model_name(name.strip())
        if name in registry:
            raise ValueError(f"it names the model {name!r} twice (once under an old name)")
        registry[name] = path.strip()
    return registry


def _clock_time(raw: object) -> object:
    """An ``HH:MM`` time of day as ``(hour, minute)``."""
    if not isinstance(raw, str):
        return raw
    matched = re.fullmatch(r"([01]?[0-9]|2[0-3]):([0-5][0-9])", raw.strip(), flags=re.ASCII)
    if not matched:
        raise ValueError()  # the error names the form allowed, which says it all
    return int(matched[1]), int(matched[2])


def _comma_list(raw: object) -> object:
    """``a,b,c`` as its items, for pydantic to validate one by one."""
    return [part for part in raw.split(",") if part.strip()] if isinstance(raw, str) else raw


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
EVERY_ADDRESS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def _networks(spec: str) -> tuple[IpNetwork, ...]:
    """``FORWARDED_ALLOW_IPS`` as gunicorn reads it: comma-separated addresses or networks (strict, as
    ``ipaddress.ip_network``: ``10.0.0.1/8`` has host bits set), or ``*`` for every address."""
    entries = [entry.strip() for entry in spec.split(",") if entry]  # gunicorn refuses a blank entry too
    networks = tuple(ipaddress.ip_network(entry) for entry in entries if entry != "*")
    return EVERY_ADDRESS if "*" in entries else networks


ModelRegistry = Annotated[dict[str, str], BeforeValidator(_model_registry)]
ClockTime = Annotated[tuple[int, int], BeforeValidator(_clock_time)]
Delays = Annotated[tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)], ...], BeforeValidator(_comma_list)]


class Group(BaseModel):
    """A group of settings, validated from the flat mapping of environment variables (aliases are the names)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class ApiSettings(Group):
    """The HTTP API: gunicorn, the proxy (nginx) in front of it, and the limits on clients."""

    bind: str = Field(
        "127.0.0.1:8001",
        alias="API_BIND",
        description="gunicorn's address; clients reach it through the proxy on `PROXY_BIND`",
        json_schema_extra=shown(allowed="`host:port`"),
    )
    proxy_bind: str = Field(
        "127.0.0.1:8000",
        alias="PROXY_BIND",
        description="where nginx (`python -m proxy`) listens for clients, in front of gunicorn on `API_BIND`",
        json_schema_extra=shown(allowed="`host:port`"),
    )
    processes: int = Field(2, alias="WEB_CONCURRENCY", ge=1, description="gunicorn's worker processes")
    threads: int = Field(4, alias="API_THREADS", ge=1, description="threads of each gunicorn worker process")
    timeout: int = Field(
        120,
        alias="API_TIMEOUT",
        ge=1,
        description="seconds gunicorn (and the proxy, a little longer) waits on a request",
    )
    predict_max_wait_seconds: int = Field(
        30,
        alias="PREDICT_MAX_WAIT_SECONDS",
        ge=0,
        description=(
            "the longest `POST /api/v1/predict` holds a request for its job, whatever `timeout` asks; past it the "
            "answer is 202 with the job (keep it under `API_TIMEOUT`)"
        ),
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        alias="FORWARDED_ALLOW_IPS",
        description=(
            "addresses or networks whose `X-Forwarded-*` headers gunicorn, and the failed-authentication "
            "throttle, trust (the proxy's)"
        ),
        json_schema_extra=shown(allowed="comma-separated addresses or networks (`10.0.0.0/8`), or `*` for all"),
    )
    max_upload_bytes: int = Field(
        64 * 1024 * 1024,
        alias="MAX_UPLOAD_BYTES",
        ge=1,
        description="largest request body; larger ones get 413",
        json_schema_extra=shown(default="`67108864` (64 MiB)"),
    )
    secret_key: str | None = Field(
        None,
        alias="SECRET_KEY",
        description="signs the web form's CSRF tokens; set it on every API replica",
        json_schema_extra=shown(default="generated once into `var/secret_key`"),
    )
    bootstrap_admin_key: str | None = Field(
        None,
        alias="ADMIN_API_KEY",
        description="an admin key that `flask --app app keys bootstrap` imports (OpenShift's generated Secret)",
    )
    jobs_per_minute: int = Field(
        120, alias="QUOTA_JOBS_PER_MINUTE", ge=1, description="per tenant: job submissions per minute (429 past it)"
    )
    max_active_jobs: int = Field(
        200, alias="QUOTA_ACTIVE_JOBS", ge=1, description="per tenant: jobs queued or running at once (429 past it)"
    )
    rate_limit_storage_url: str | None = Field(
        None,
        alias="RATE_LIMIT_STORAGE_URL",
        description="where the API's rate limiters count submissions and failed authentications",
        json_schema_extra=shown(default="the result backend's Redis", allowed="a `redis://` URL"),
    )
    auth_failures_per_minute: int = Field(
        20,
        alias="AUTH_FAILURES_PER_MINUTE",
        ge=1,
        description=(
            "per client address: keys refused in a minute (a missing key is not counted) before further "
            "attempts get 429, before any key is looked up"
        ),
    )
    proxy_connections_per_address: int = Field(
        32,
        alias="PROXY_CONNECTIONS_PER_ADDRESS",
        ge=1,
        description="per client address at the proxy (nginx): requests in progress at once (429 past it)",
    )
    proxy_requests_per_second: int = Field(
        20,
        alias="PROXY_REQUESTS_PER_SECOND",
        ge=1,
        description="per client address at the proxy (nginx): requests a second, burst twice that (429 past it)",
    )
    metrics_dir: Path | None = Field(
        None,
        alias="PROMETHEUS_MULTIPROC_DIR",
        description="where gunicorn's processes record metrics for `/metrics` to add up",
        json_schema_extra=shown(default="a new temporary folder, set by gunicorn's configuration"),
    )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses_or_networks(cls, spec: str) -> str:
        _networks(spec)  # raises ValueError, naming the entry, on one gunicorn would refuse
        return spec

    @cached_property
    def forwarded_allow_networks(self) -> tuple[IpNetwork, ...]:
        """FORWARDED_ALLOW_IPS parsed: the networks whose peers' ``X-Forwarded-*`` headers are trusted."""
        return _networks(self.forwarded_allow_ips)


class WorkerSettings(Group):
    """The Celery workers: devices, batching, metrics and Ultralytics' own settings."""

    device: str = Field(
        "auto",
        alias="WORKER_DEVICE",
        pattern=r"^(auto|cpu|cuda:[0-9]+)$",
        description="where inference runs; `auto`: prefork child k uses GPU k % count with CUDA, else the CPU",
        json_schema_extra=shown(allowed="`auto`, `cpu` or `cuda:N`"),
    )
    inference_batch_size: int = Field(
        8,
        alias="INFERENCE_BATCH_SIZE",
        ge=1,
        description=(
            "at most this many images per `predict` call: fewer when images are slow, so a call fits 2 s "
            "(`tasks/pacing.py`); results and progress are written at least every 2 s while images finish, "
            "or with each image when one takes longer"
        ),
    )
    processes: int | None = Field(
        None,
        alias="WORKER_PROCESSES",
        ge=1,
        description=(
            "prefork processes (Celery's concurrency; `-c` overrides it); GPU nodes run one per GPU (`-c GPU_COUNT`)"
        ),
        json_schema_extra=shown(default="one per core the worker may use (affinity and cgroup quota)"),
    )
    inference_threads: int | None = Field(
        None,
        alias="WORKER_INFERENCE_THREADS",
        ge=1,
        description="inference threads of each worker process",
        json_schema_extra=shown(default="the allowed cores divided among the pool's processes"),
    )
    round_jobs: int = Field(
        32,
        alias="WORKER_ROUND_JOBS",
        ge=1,
        description=(
            "at most this many jobs a worker process holds at once: its task's, and the small ready jobs "
            "it takes into the round (`tasks/intake.py`; `1`: each job alone)"
        ),
    )
    max_image_pixels: int = Field(
        178_956_970,
        alias="WORKER_MAX_IMAGE_PIXELS",
        ge=1,
        description=(
            "an image or video frame whose header declares more pixels is refused (413 when it is stored, an error "
            "result in a job), never decoded; at most Pillow's own bomb limit"
        ),
    )
    max_models: int = Field(
        4,
        alias="WORKER_MAX_MODELS",
        ge=1,
        description=(
            "models one worker process keeps loaded at once, each loaded on its first job; past it the least "
            "recently used is let go"
        ),
    )
    metrics_port: int = Field(
        9808, alias="WORKER_METRICS_PORT", ge=0, le=65535, description="the workers' Prometheus port (`0` turns it off)"
    )
    metrics_addr: str = Field(
        "127.0.0.1",
        alias="WORKER_METRICS_ADDR",
        description="the address the workers' Prometheus endpoint listens on",
        json_schema_extra=shown(allowed="an address"),
    )
    ultralytics_offline: bool = Field(
        True, alias="YOLO_OFFLINE", description="keep Ultralytics off the network (no downloads, no checks)"
    )
    ultralytics_config_dir: Path = Field(
        VAR_DIR / "ultralytics",
        alias="YOLO_CONFIG_DIR",
        description="Ultralytics' settings folder (and its fonts)",
        json_schema_extra=shown(default="`var/ultralytics` in the checkout"),
    )


class JobSettings(Group):
    """How jobs are kept moving: attempt leases, beat's reaper, and riding out database outages."""

    lease_seconds: int = Field(
        300,
        alias="JOB_LEASE_SECONDS",
        ge=1,
        description="a running attempt's lease, renewed every third of it; a job whose lease expired is re-sent",
    )
    reaper_interval_seconds: int = Field(
        60, alias="REAPER_INTERVAL_SECONDS", ge=1, description="how often beat's reaper looks for jobs to re-send"
    )
    database_retry_seconds: int = Field(
        600,
        alias="JOB_DATABASE_RETRY_SECONDS",
        ge=1,
        description="how long a worker keeps retrying the database before leaving the job to the reaper",
    )

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)


class FileSettings(Group):
    """Files of any size: resumable uploads, what a tenant may keep, and jobs on stored files."""

    max_file_bytes: int = Field(
        20 * 1024**3,
        alias="MAX_FILE_BYTES",
        ge=1,
        description="the largest file a resumable upload may announce (`Upload-Length`); larger ones get 413",
        json_schema_extra=shown(default="`21474836480` (20 GiB)"),
    )
    upload_expiry_hours: int = Field(
        24,
        alias="UPLOAD_EXPIRY_HOURS",
        ge=1,
        description="an unfinished resumable upload is removed, part and all, this long after it was created",
    )
    upload_sweep_interval_seconds: int = Field(
        600, alias="UPLOAD_SWEEP_INTERVAL_SECONDS", ge=1, description="how often beat removes expired uploads"
    )
    pending_upload_bytes: int = Field(
        40 * 1024**3,
        alias="QUOTA_PENDING_UPLOAD_BYTES",
        ge=1,
        description="per tenant: bytes announced by its unfinished resumable uploads at once (507 past it)",
        json_schema_extra=shown(default="`42949672960` (40 GiB)"),
    )
    pending_uploads: int = Field(
        1000,
        alias="QUOTA_PENDING_UPLOADS",
        ge=1,
        description="per tenant: unfinished resumable uploads at once (429 past it)",
    )
    storage_bytes: int = Field(
        1024**4,
        alias="QUOTA_STORAGE_BYTES",
        ge=1,
        description=(
            "per tenant: bytes its live files take, each stored file counted once (507 past it; 413 for a file "
            "larger than the whole quota)"
        ),
        json_schema_extra=shown(default="`1099511627776` (1 TiB)"),
    )
    max_job_files: int = Field(
        10_000,
        alias="MAX_JOB_FILES",
        ge=1,
        description="the most stored files one job may name by `file_id` (a multipart job uploads at most 100)",
    )
    signed_url_seconds: int = Field(
        7 * 24 * 3600,
        alias="SIGNED_URL_SECONDS",
        ge=60,
        description=(
            "how long a signed file URL in an export (Label Studio's `data.image`) fetches the file without a key"
        ),
        json_schema_extra=shown(default="`604800` (7 days)"),
    )
    export_image_url_base: str | None = Field(
        None,
        alias="EXPORT_IMAGE_URL_BASE",
        description=(
            "when set, exports point at `<base>/<filename>` (your own copy of the images) instead of signed URLs"
        ),
        json_schema_extra=shown(allowed="a URL"),
    )
    result_reuse: Literal["tenant", "off"] = Field(
        "tenant",
        alias="RESULT_REUSE",
        description=(
            "`tenant`: a file with a result for the same bytes, weights, conf, iou, size, backend and precision "
            "in a job of the same tenant takes it without inference; `off`: every file is inferred"
        ),
    )

    @property
    def upload_expiry(self) -> timedelta:
        return timedelta(hours=self.upload_expiry_hours)


class MediaSettings(Group):
    """Large media split across workers: a video's segments and a huge image's tiles (jobs/parts.py)."""

    segment_seconds: float = Field(
        10.0,
        alias="VIDEO_SEGMENT_SECONDS",
        gt=0,
        description="a video job runs as segments of this many seconds of video, each a task any worker may take",
    )
    tiles_per_part: int = Field(
        64,
        alias="TILES_PER_PART",
        ge=1,
        description="an image run as tiles is split into parts of at most this many tiles, each a task of its own",
    )
    tile_overlap: float = Field(
        0.2,
        alias="TILE_OVERLAP",
        ge=0,
        lt=0.5,
        description="how much neighbouring tiles overlap, as a share of a tile's side (SAHI's overlap ratio)",
    )


class WebhookSettings(Group):
    """Delivering ``job.finished`` webhooks: where links point, what may be reached, and when to retry."""

    public_url: str = Field(
        "http://127.0.0.1:8000",
        alias="PUBLIC_URL",
        description="where clients reach the API: the links in webhooks point there",
        json_schema_extra=shown(default="`http://<PROXY_BIND>`", allowed="a URL"),
    )
    allow_private: bool = Field(
        False,
        alias="WEBHOOK_ALLOW_PRIVATE",
        description="let webhooks reach loopback, private, link-local and other non-global addresses (development)",
    )
    # The Standard Webhooks retry schedule.
    retry_schedule: Delays = Field(
        "5,300,1800,7200,18000,36000,36000",  # type: ignore[assignment]  # validated into the tuple
        alias="WEBHOOK_RETRY_SCHEDULE",
        validate_default=True,
        description="seconds before each retry of a failed attempt; its length is the number of retries",
        json_schema_extra=shown(allowed="comma-separated seconds, each >= 0"),
    )
    timeout_seconds: int = Field(
        10, alias="WEBHOOK_TIMEOUT_SECONDS", ge=1, description="how long one attempt may take, connecting and answering"
    )
    sweep_interval_seconds: int = Field(
        60,
        alias="WEBHOOK_SWEEP_INTERVAL_SECONDS",
        ge=1,
        description="how often beat re-sends deliveries whose message was lost or whose back-off has passed",
    )

    @model_validator(mode="before")
    @classmethod
    def _public_url_defaults_to_the_proxy(cls, env: Any) -> Any:
        if isinstance(env, Mapping) and not env.get("PUBLIC_URL"):
            proxy_bind = env.get("PROXY_BIND") or ApiSettings.model_fields["proxy_bind"].default
            return {**env, "PUBLIC_URL": f"http://{proxy_bind}"}
        return env

    @field_validator("public_url")
    @classmethod
    def _without_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")


class RetentionSettings(Group):
    """How long stored bytes are kept, and when beat runs the cleanup."""

    days: int = Field(
        30,
        alias="RETENTION_DAYS",
        ge=1,
        description=(
            "a stored file's bytes are deleted once every job that references it finished more than this many days "
            "ago and no newer or unfinished job references it"
        ),
    )
    cleanup_time: ClockTime = Field(
        "03:30",  # type: ignore[assignment]  # validated into (hour, minute)
        alias="RETENTION_CLEANUP_TIME",
        validate_default=True,
        description="when beat runs the cleanup each day (UTC)",
        json_schema_extra=shown(allowed="a time of day, `HH:MM`"),
    )
    cleanup_interval_seconds: int | None = Field(
        None,
        alias="RETENTION_CLEANUP_INTERVAL_SECONDS",
        ge=1,
        description="when set, beat runs the cleanup this often instead of daily (tests, demos)",
    )


class Settings(Group):
    """Configuration shared by the API, the workers and the operator tools."""

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/yolo_jobs",
        alias="DATABASE_URL",
        description="PostgreSQL (libpq form; psycopg2 is used)",
        json_schema_extra=shown(allowed="a `postgresql://` URL"),
    )
    broker_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672//",
        alias="CELERY_BROKER_URL",
        description="RabbitMQ",
        json_schema_extra=shown(allowed="an `amqp://` URL"),
    )
    broker_management_url: str | None = Field(
        None,
        alias="RABBITMQ_MANAGEMENT_URL",
        description=(
            "RabbitMQ's management HTTP API, where `/metrics` reads each queue's ready and unacknowledged messages "
            "(for the broker URL's vhost, with the broker URL's user and password unless this URL has its own)"
        ),
        json_schema_extra=shown(
            default="`http://<CELERY_BROKER_URL's host>:15672`", allowed="an `http://` or `https://` URL"
        ),
    )
    result_backend: str = Field(
        "redis://127.0.0.1:6379/0",
        alias="CELERY_RESULT_BACKEND",
        description="Redis, for task states (PROGRESS) and results",
        json_schema_extra=shown(allowed="a `redis://` URL"),
    )
    storage_root: Path = Field(
        VAR_DIR / "storage",
        alias="STORAGE_ROOT",
        description="the shared (ReadWriteMany) volume that holds uploads and results",
        json_schema_extra=shown(default="`var/storage` in the checkout (`/shared-storage` on OpenShift)"),
    )
    log_format: Literal["json", "text"] = Field(
        "json",
        alias="LOG_FORMAT",
        description="`json` lines or plain `text` (`make` targets use `text`)",
    )
    shapes_weights: str | None = Field(
        None,
        alias="YOLO_MODEL",
        description="weights of the model named `shapes`",
        json_schema_extra=shown(default="`models/shapes-yolov8n.pt` (bundled)", allowed="a weights path"),
    )
    models: ModelRegistry = Field(
        {},
        alias="YOLO_MODELS",
        validate_default=True,
        description=(
            "the model registry (e.g. `coco=/shared-storage/models/yolo11n.pt`), `shapes` first; a path is `.pt` "
            "weights, an `.onnx` file or an OpenVINO folder (`*_openvino_model/`); `default`, the bundled model's "
            "old name, is still accepted here, in `YOLO_DEFAULT_MODEL`, in the API and the form, and jobs record "
            "`shapes`"
        ),
        json_schema_extra=shown(default="`shapes=<YOLO_MODEL>`", allowed="`name=path,name=path`"),
    )
    default_model: str = Field(
        BUNDLED_MODEL_NAME,
        alias="YOLO_DEFAULT_MODEL",
        validate_default=True,
        description="the model a job runs when it names none",
        json_schema_extra=shown(allowed="a name in `YOLO_MODELS`"),
    )
    api: ApiSettings = Field(default_factory=ApiSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    files: FileSettings = Field(default_factory=FileSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    @field_validator("models")
    @classmethod
    def _bundled_model_first(cls, models: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """``shapes`` first: YOLO_MODEL's weights, else YOLO_MODELS' entry, else the bundled model."""
        listed = models.pop(BUNDLED_MODEL_NAME, None)
        bundled_weights = info.data.get("shapes_weights") or listed or str(BUNDLED_MODEL)
        return {BUNDLED_MODEL_NAME: bundled_weights, **models}

    @field_validator("default_model")
    @classmethod
    def _registered(cls, named: str, info: ValidationInfo) -> str:
        name = model_name(named)
        if "models" in info.data and name not in info.data["models"]:
            raise ValueError()  # the error names the form allowed, which says it all
        return name

    @property
    def rate_limit_storage(self) -> str:
        """Where the API's rate limiters keep their counters: RATE_LIMIT_STORAGE_URL, else the result backend."""
        return self.api.rate_limit_storage_url or self.result_backend

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``); raise :class:`SettingsError` on a bad value.

        An empty value counts as unset. Every group reads the same variables.
        """
        env = os.environ if env is None else env
        values = {name: env[name] for name in declared_fields() if env.get(name, "").strip()}
        try:
            return cls.model_validate({**values, **dict.fromkeys(groups(), values)})
        except ValidationError as exc:
            raise SettingsError(_explain(exc, values)) from None

    def aliases_of(self, name: str) -> list[str]:
        """The other names ``name`` is accepted under."""
        return [alias for alias, target in MODEL_ALIASES.items() if target == name]


def groups() -> dict[str, type[Group]]:
    """The groups of :class:`Settings` by attribute name (``api``, ``worker``, ...)."""
    return {
        name: field.annotation
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, Group)
    }


def declared_fields() -> dict[str, FieldInfo]:
    """Every setting's declaration (a pydantic ``FieldInfo``) by its environment variable, in declaration order."""
    return {
        field.alias: field
        for model in (Settings, *groups().values())
        for field in model.model_fields.values()
        if field.alias
    }


def allowed_values(field: FieldInfo) -> str:
    """What a setting accepts, in words (Markdown): its declared form, else its type and bounds."""
    declared = (field.json_schema_extra or {}).get("allowed")
    if declared:
        return declared
    kinds = [kind for kind in getattr(field.annotation, "__args__", (field.annotation,)) if kind is not type(None)]
    if getattr(field.annotation, "__origin__", None) is Literal:
        return " or ".join(f"`{value}`" for value in kinds)
    (kind,) = kinds
    if kind is bool:
        return "a boolean: `1`, `true`, `yes` or `0`, `false`, `no`"
    if kind is int:
        low = next((rule.ge for rule in field.metadata if hasattr(rule, "ge")), None)
        high = next((rule.le for rule in field.metadata if hasattr(rule, "le")), None)
        if low is not None and high is not None:
            return f"an integer from {low} to {high}"
        return "an integer" + (f" >= {low}" if low is not None else "")
    if kind is float:
        signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
        bounds = [
            f"{sign} {getattr(rule, name)}"
            for rule in field.metadata
            for name, sign in signs.items()
            if hasattr(rule, name)
        ]
        return "a number" + (" " + " and ".join(bounds) if bounds else "")
    if kind is Path:
        return "a path"
    return "text"


def _explain(error: ValidationError, values: Mapping[str, str]) -> str:
    """One sentence per bad variable: ``NAME must be <what it allows>, got '<value>'`` and why, where a check says."""
    fields = declared_fields()
    sentences: dict[str, str] = {}
    for problem in error.errors():
        name = next(str(part) for part in problem["loc"] if part in fields)
        reason = str(problem.get("ctx", {}).get("error", "")) if problem["type"] == "value_error" else ""
        allowed = allowed_values(fields[name]).replace("`", "")
        sentence = f"{name} must be {allowed}, got {values.get(name, fields[name].default)!r}"
        sentences.setdefault(name, sentence + (f": {reason}" if reason else ""))
    return "; ".join(sentences.values())


def inherited_environment() -> dict[str, str]:
    """A copy of this process's environment, for a child process it starts (the test harness's)."""
    return dict(os.environ)

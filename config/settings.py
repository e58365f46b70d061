"""Every setting of yolo-jobs, read from environment variables here and nowhere else.

Each process builds one :class:`Settings` at start-up (``Settings.from_env()``) and
passes it on: ``create_app(settings)``, the Celery app in ``tasks``, gunicorn's
``gunicorn.conf.py`` and the maintenance commands. Defaults work on a developer
machine with PostgreSQL, RabbitMQ and Redis on localhost; OpenShift sets the same
variables from a ConfigMap and Secrets. Fields only the API or only the workers use
are grouped as :class:`ApiSettings` and :class:`WorkerSettings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from config.paths import BUNDLED_MODEL, VAR_DIR

# The bundled model's name in the registry, and the older names still accepted wherever a model is
# named (the API, the form, YOLO_MODELS, YOLO_DEFAULT_MODEL, jobs queued before the rename): jobs
# record the registry name.
BUNDLED_MODEL_NAME = "shapes"
MODEL_ALIASES = {"default": BUNDLED_MODEL_NAME}


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


def parse_model_registry(spec: str) -> dict[str, str]:
    """Parse ``name=path,name=path`` into an ordered mapping of model names to weights paths."""
    registry: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise SettingsError(f"YOLO_MODELS entry {item!r} is not name=path")
        registry[name.strip()] = path.strip()
    return registry


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer") from exc


def _positive_or_none(env: Mapping[str, str], name: str) -> int | None:
    """A positive integer, or ``None`` when unset or empty (the setting's derived default)."""
    if not env.get(name, "").strip():
        return None
    value = _int(env, name, 0)
    if value < 1:
        raise SettingsError(f"{name} must be a positive integer")
    return value


def _clock_time(env: Mapping[str, str], name: str, default: tuple[int, int]) -> tuple[int, int]:
    """An ``HH:MM`` time of day as ``(hour, minute)``."""
    raw = env.get(name)
    if raw is None:
        return default
    hour, _, minute = raw.strip().partition(":")
    digits = hour.isascii() and hour.isdigit() and minute.isascii() and minute.isdigit()
    if not digits or not (0 <= int(hour) <= 23 and 0 <= int(minute) <= 59):
        raise SettingsError(f"{name} must be a time of day as HH:MM")
    return int(hour), int(minute)


@dataclass(frozen=True)
class ApiSettings:
    """The HTTP API and its gunicorn server."""

    # gunicorn's address; clients reach it through the proxy (nginx, ``proxy/``) on proxy_bind.
    bind: str = "127.0.0.1:8001"
    proxy_bind: str = "127.0.0.1:8000"
    processes: int = 2  # WEB_CONCURRENCY
    threads: int = 4
    timeout: int = 120
    # Addresses whose X-Forwarded-* headers gunicorn trusts (the OpenShift router's).
    forwarded_allow_ips: str = "127.0.0.1"
    max_upload_bytes: int = 64 * 1024 * 1024
    secret_key: str | None = None
    # An admin API key to import at deploy time (``flask --app app keys bootstrap``; a generated Secret).
    bootstrap_admin_key: str | None = None
    # Per tenant: jobs it may create per minute, and jobs it may have queued or running at once.
    jobs_per_minute: int = 120
    max_active_jobs: int = 200
    # Where the rate limiter keeps its counters (default: the result backend's Redis).
    rate_limit_storage_url: str | None = None
    # Failed authentications (401s) a client address may have in a minute; past it, 429 before any key is looked up.
    auth_failures_per_minute: int = 20
    # Per client address at the proxy (nginx): requests in progress at once, and requests a second
    # (with a burst of two seconds' worth). Past either: 429.
    proxy_connections_per_address: int = 32
    proxy_requests_per_second: int = 20
    # Where gunicorn's processes record metrics for /metrics to add up (set by gunicorn.conf.py).
    metrics_dir: Path | None = None


@dataclass(frozen=True)
class WorkerSettings:
    """The Celery workers: devices, batching, metrics and Ultralytics' own settings."""

    device: str = "auto"
    inference_batch_size: int = 8
    # Prefork processes (Celery's concurrency; ``-c`` overrides it). None: Celery's "auto", one per
    # core the worker may use (affinity and cgroup quota). GPU nodes run one per GPU (``-c GPU_COUNT``).
    processes: int | None = None
    # Inference threads of each process. None: the allowed cores divided among the pool's processes.
    inference_threads: int | None = None
    # Jobs a worker process runs together in one round (tasks/rounds.py): 1 turns rounds off.
    round_jobs: int = 8
    # A file whose header declares more pixels gets an error result, never a decode (Pillow's bomb limit).
    max_image_pixels: int = 89_478_485
    metrics_port: int = 9808
    metrics_addr: str = "127.0.0.1"
    ultralytics_offline: bool = True
    ultralytics_config_dir: Path = VAR_DIR / "ultralytics"


@dataclass(frozen=True)
class JobSettings:
    """How jobs are kept moving: attempt leases, beat's reaper, and riding out database outages."""

    # A running attempt's lease; renewed every third of it. A job whose lease expired is re-sent.
    lease_seconds: int = 300
    # How often beat's reaper looks for jobs to re-send.
    reaper_interval_seconds: int = 60
    # How long a worker keeps retrying the database before leaving the job to the reaper.
    database_retry_seconds: int = 600

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)


# The Standard Webhooks retry schedule: the delay before each retry of a failed attempt.
WEBHOOK_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


@dataclass(frozen=True)
class WebhookSettings:
    """Delivering ``job.finished`` webhooks: where links point, what may be reached, and when to retry."""

    # The address clients reach the API at, for the links in a webhook's body (PUBLIC_URL).
    public_url: str = "http://127.0.0.1:8000"
    # Whether loopback, private, link-local and other non-global addresses may receive webhooks (development, tests).
    allow_private: bool = False
    # Seconds before each retry; its length is the number of retries (shortened in tests).
    retry_schedule: tuple[float, ...] = WEBHOOK_RETRY_SCHEDULE
    # How long one attempt may take, connecting and answering together.
    timeout_seconds: int = 10
    # How often beat's sweep re-sends deliveries whose message was lost or whose back-off has passed.
    sweep_interval_seconds: int = 60


@dataclass(frozen=True)
class RetentionSettings:
    """How long stored bytes are kept, and when beat runs the cleanup."""

    days: int = 30
    cleanup_time: tuple[int, int] = (3, 30)  # (hour, minute) UTC
    # When set, beat runs the cleanup every this many seconds instead of daily (tests, demos).
    cleanup_interval_seconds: int | None = None


@dataclass(frozen=True)
class Settings:
    """Configuration shared by the API, the workers and the operator tools."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/yolo_jobs"
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    result_backend: str = "redis://127.0.0.1:6379/0"
    storage_root: Path = VAR_DIR / "storage"
    log_format: str = "json"
    models: dict[str, str] = field(default_factory=lambda: {BUNDLED_MODEL_NAME: str(BUNDLED_MODEL)})
    # The model a job runs when it names none (YOLO_DEFAULT_MODEL): one of ``models``.
    default_model: str = BUNDLED_MODEL_NAME
    api: ApiSettings = field(default_factory=ApiSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)

    @property
    def rate_limit_storage(self) -> str:
        """Where the API's rate limiters keep their counters: RATE_LIMIT_STORAGE_URL, else the result backend."""
        return self.api.rate_limit_storage_url or self.result_backend

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``); raise :class:`SettingsError` on a bad value."""
        env = os.environ if env is None else env
        models = _model_registry(env)
        named = env.get("YOLO_DEFAULT_MODEL", BUNDLED_MODEL_NAME)
        default_model = MODEL_ALIASES.get(named, named)
        if default_model not in models:
            raise SettingsError(f"YOLO_DEFAULT_MODEL {default_model!r} is not in YOLO_MODELS")
        return cls(
            database_url=env.get("DATABASE_URL", cls.database_url),
            broker_url=env.get("CELERY_BROKER_URL", cls.broker_url),
            result_backend=env.get("CELERY_RESULT_BACKEND", cls.result_backend),
            storage_root=Path(env.get("STORAGE_ROOT", str(cls.storage_root))),
            log_format=env.get("LOG_FORMAT", cls.log_format),
            models=models,
            default_model=default_model,
            api=_api_settings(env),
            worker=_worker_settings(env),
            retention=_retention_settings(env),
            jobs=_job_settings(env),
            webhooks=_webhook_settings(env),
        )

    def registry_name(self, name: str) -> str | None:
        """The registry name of the model ``name`` stands for (itself, or an alias's model); None if unknown."""
        name = MODEL_ALIASES.get(name, name)
        return name if name in self.models else None

    def runs_bundled_weights(self, name: str) -> bool:
        """Whether the model ``name`` is the bundled shapes model (then pages say what it cannot find)."""
        return self.models.get(name) == str(BUNDLED_MODEL)

    def aliases_of(self, name: str) -> list[str]:
        """The other names ``name`` is accepted under."""
        return [alias for alias, target in MODEL_ALIASES.items() if target == name]


def inherited_environment() -> dict[str, str]:
    """A copy of this process's environment, for a child process it starts (the test harness's)."""
    return dict(os.environ)


def _model_registry(env: Mapping[str, str]) -> dict[str, str]:
    """``YOLO_MODELS``, with ``shapes`` first: YOLO_MODEL's weights, else the bundled model.

    An entry under an alias (``default=…``, from before the rename) is the model it stands for.
    """
    models: dict[str, str] = {}
    for name, weights in parse_model_registry(env.get("YOLO_MODELS", "")).items():
        name = MODEL_ALIASES.get(name, name)
        if name in models:
            raise SettingsError(f"YOLO_MODELS names the model {name!r} twice (once under an old name)")
        models[name] = weights
    listed = models.pop(BUNDLED_MODEL_NAME, None)
    bundled_weights = env.get("YOLO_MODEL") or listed or str(BUNDLED_MODEL)
    return {BUNDLED_MODEL_NAME: bundled_weights, **models}


def _api_settings(env: Mapping[str, str]) -> ApiSettings:
    defaults = ApiSettings()
    metrics_dir = env.get("PROMETHEUS_MULTIPROC_DIR")
    return ApiSettings(
        bind=env.get("API_BIND", defaults.bind),
        proxy_bind=env.get("PROXY_BIND", defaults.proxy_bind),
        processes=_int(env, "WEB_CONCURRENCY", defaults.processes),
        threads=_int(env, "API_THREADS", defaults.threads),
        timeout=_int(env, "API_TIMEOUT", defaults.timeout),
        forwarded_allow_ips=env.get("FORWARDED_ALLOW_IPS", defaults.forwarded_allow_ips),
        max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", defaults.max_upload_bytes),
        secret_key=env.get("SECRET_KEY") or None,
        bootstrap_admin_key=env.get("ADMIN_API_KEY") or None,
        jobs_per_minute=_int(env, "QUOTA_JOBS_PER_MINUTE", defaults.jobs_per_minute),
        max_active_jobs=_int(env, "QUOTA_ACTIVE_JOBS", defaults.max_active_jobs),
        rate_limit_storage_url=env.get("RATE_LIMIT_STORAGE_URL") or None,
        auth_failures_per_minute=_int(env, "AUTH_FAILURES_PER_MINUTE", defaults.auth_failures_per_minute),
        proxy_connections_per_address=_int(
            env, "PROXY_CONNECTIONS_PER_ADDRESS", defaults.proxy_connections_per_address
        ),
        proxy_requests_per_second=_int(env, "PROXY_REQUESTS_PER_SECOND", defaults.proxy_requests_per_second),
        metrics_dir=Path(metrics_dir) if metrics_dir else None,
    )


def _worker_settings(env: Mapping[str, str]) -> WorkerSettings:
    defaults = WorkerSettings()
    device = env.get("WORKER_DEVICE", defaults.device)
    if device not in ("auto", "cpu") and not device.startswith("cuda:"):
        raise SettingsError("WORKER_DEVICE must be auto, cpu or cuda:N")
    return WorkerSettings(
        device=device,
        inference_batch_size=_int(env, "INFERENCE_BATCH_SIZE", defaults.inference_batch_size),
        processes=_positive_or_none(env, "WORKER_PROCESSES"),
        inference_threads=_positive_or_none(env, "WORKER_INFERENCE_THREADS"),
        round_jobs=max(1, _int(env, "WORKER_ROUND_JOBS", defaults.round_jobs)),
        max_image_pixels=_int(env, "WORKER_MAX_IMAGE_PIXELS", defaults.max_image_pixels),
        metrics_port=_int(env, "WORKER_METRICS_PORT", defaults.metrics_port),
        metrics_addr=env.get("WORKER_METRICS_ADDR", defaults.metrics_addr),
        ultralytics_offline=env.get("YOLO_OFFLINE", "1").lower() not in ("0", "false", "no"),
        ultralytics_config_dir=Path(env.get("YOLO_CONFIG_DIR", str(defaults.ultralytics_config_dir))),
    )


def _job_settings(env: Mapping[str, str]) -> JobSettings:
    defaults = JobSettings()
    settings = JobSettings(
        lease_seconds=_int(env, "JOB_LEASE_SECONDS", defaults.lease_seconds),
        reaper_interval_seconds=_int(env, "REAPER_INTERVAL_SECONDS", defaults.reaper_interval_seconds),
        database_retry_seconds=_int(env, "JOB_DATABASE_RETRY_SECONDS", defaults.database_retry_seconds),
    )
    if min(settings.lease_seconds, settings.reaper_interval_seconds, settings.database_retry_seconds) < 1:
        raise SettingsError(
            "JOB_LEASE_SECONDS, REAPER_INTERVAL_SECONDS and JOB_DATABASE_RETRY_SECONDS must be positive"
        )
    return settings


def _retry_schedule(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """Comma-separated seconds, each at least 0."""
    raw = env.get(name)
    if raw is None:
        return default
    try:
        delays = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise SettingsError(f"{name} must be comma-separated seconds") from exc
    if not all(0 <= delay < float("inf") for delay in delays):
        raise SettingsError(f"{name} must be comma-separated seconds, none negative")
    return delays


def _webhook_settings(env: Mapping[str, str]) -> WebhookSettings:
    defaults = WebhookSettings()
    proxy_bind = env.get("PROXY_BIND", ApiSettings.proxy_bind)
    settings = WebhookSettings(
        public_url=(env.get("PUBLIC_URL") or f"http://{proxy_bind}").rstrip("/"),
        allow_private=env.get("WEBHOOK_ALLOW_PRIVATE", "0").lower() in ("1", "true", "yes"),
        retry_schedule=_retry_schedule(env, "WEBHOOK_RETRY_SCHEDULE", defaults.retry_schedule),
        timeout_seconds=_int(env, "WEBHOOK_TIMEOUT_SECONDS", defaults.timeout_seconds),
        sweep_interval_seconds=_int(env, "WEBHOOK_SWEEP_INTERVAL_SECONDS", defaults.sweep_interval_seconds),
    )
    if min(settings.timeout_seconds, settings.sweep_interval_seconds) < 1:
        raise SettingsError("WEBHOOK_TIMEOUT_SECONDS and WEBHOOK_SWEEP_INTERVAL_SECONDS must be positive")
    return settings


def _retention_settings(env: Mapping[str, str]) -> RetentionSettings:
    defaults = RetentionSettings()
    return RetentionSettings(
        days=_int(env, "RETENTION_DAYS", defaults.days),
        cleanup_time=_clock_time(env, "RETENTION_CLEANUP_TIME", defaults.cleanup_time),
        cleanup_interval_seconds=_int(env, "RETENTION_CLEANUP_INTERVAL_SECONDS", 0) or None,
    )

"""Every setting of yolo-jobs, read from environment variables in this one place.

Defaults work on a developer machine with PostgreSQL, RabbitMQ and Redis on
localhost; OpenShift sets the same variables from a ConfigMap and Secrets.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = PROJECT_ROOT / "var"
BUNDLED_MODEL = PROJECT_ROOT / "models" / "shapes-yolov8n.pt"
DEFAULT_MODEL_NAME = "default"


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
class Settings:
    """Configuration shared by the API, the workers and the operator tools."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/yolo_jobs"
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    result_backend: str = "redis://127.0.0.1:6379/0"
    storage_root: Path = VAR_DIR / "storage"
    max_upload_bytes: int = 64 * 1024 * 1024
    models: dict[str, str] = field(default_factory=lambda: {DEFAULT_MODEL_NAME: str(BUNDLED_MODEL)})
    worker_device: str = "auto"
    inference_batch_size: int = 8
    retention_days: int = 30
    retention_cleanup_time: tuple[int, int] = (3, 30)  # (hour, minute) UTC
    # When set, beat runs the cleanup every this many seconds instead of daily (tests, demos).
    retention_cleanup_interval_seconds: int | None = None
    secret_key: str | None = None
    log_format: str = "json"
    worker_metrics_port: int = 9808
    worker_metrics_addr: str = "127.0.0.1"

    @property
    def default_model(self) -> str:
        return DEFAULT_MODEL_NAME

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``)."""
        env = os.environ if env is None else env
        defaults = cls()
        models = parse_model_registry(env.get("YOLO_MODELS", ""))
        default_weights = env.get("YOLO_MODEL") or models.get(DEFAULT_MODEL_NAME) or str(BUNDLED_MODEL)
        models = {DEFAULT_MODEL_NAME: default_weights, **{k: v for k, v in models.items() if k != DEFAULT_MODEL_NAME}}
        device = env.get("WORKER_DEVICE", defaults.worker_device)
        if device not in ("auto", "cpu") and not device.startswith("cuda:"):
            raise SettingsError("WORKER_DEVICE must be auto, cpu or cuda:N")
        return cls(
            database_url=env.get("DATABASE_URL", defaults.database_url),
            broker_url=env.get("CELERY_BROKER_URL", defaults.broker_url),
            result_backend=env.get("CELERY_RESULT_BACKEND", defaults.result_backend),
            storage_root=Path(env.get("STORAGE_ROOT", str(defaults.storage_root))),
            max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", defaults.max_upload_bytes),
            models=models,
            worker_device=device,
            inference_batch_size=_int(env, "INFERENCE_BATCH_SIZE", defaults.inference_batch_size),
            retention_days=_int(env, "RETENTION_DAYS", defaults.retention_days),
            retention_cleanup_time=_clock_time(env, "RETENTION_CLEANUP_TIME", defaults.retention_cleanup_time),
            retention_cleanup_interval_seconds=_int(env, "RETENTION_CLEANUP_INTERVAL_SECONDS", 0) or None,
            secret_key=env.get("SECRET_KEY") or None,
            log_format=env.get("LOG_FORMAT", defaults.log_format),
            worker_metrics_port=_int(env, "WORKER_METRICS_PORT", defaults.worker_metrics_port),
            worker_metrics_addr=env.get("WORKER_METRICS_ADDR", defaults.worker_metrics_addr),
        )


def configure_ultralytics_env(env: dict[str, str] | None = None) -> Path:
    """Keep Ultralytics offline, with its settings inside var/; call before importing it.

    Ultralytics fetches Arial.ttf from the network when its config folder lacks it;
    matplotlib (an Ultralytics dependency) ships DejaVu Sans, which stands in for it.
    Returns Ultralytics' settings folder.
    """
    env = os.environ if env is None else env
    env.setdefault("YOLO_OFFLINE", "1")
    env.setdefault("YOLO_CONFIG_DIR", str(VAR_DIR / "ultralytics"))
    settings_dir = Path(env["YOLO_CONFIG_DIR"]) / "Ultralytics"
    settings_dir.mkdir(parents=True, exist_ok=True)
    matplotlib = importlib.util.find_spec("matplotlib")
    if matplotlib and matplotlib.submodule_search_locations:
        font = Path(matplotlib.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            if font.is_file() and not (settings_dir / name).exists():
                shutil.copyfile(font, settings_dir / name)
    return settings_dir

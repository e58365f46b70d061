"""Settings come from the environment in one place, and a bad value stops start-up with a sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

import celery_config
from config import Settings, SettingsError
from config.paths import BUNDLED_MODEL


def test_defaults_work_on_this_machine() -> None:
    settings = Settings.from_env({})
    assert settings.broker_url == "amqp://guest:guest@127.0.0.1:5672//"
    assert settings.models == {"default": str(BUNDLED_MODEL)}
    assert settings.default_model == "default"
    assert settings.retention.cleanup_time == (3, 30)
    assert settings.retention.cleanup_interval_seconds is None


def test_model_registry_keeps_default_first() -> None:
    settings = Settings.from_env({"YOLO_MODELS": "coco=/m/yolo11n.pt, default=/m/shapes.pt"})
    assert list(settings.models.items()) == [("default", "/m/shapes.pt"), ("coco", "/m/yolo11n.pt")]


def test_default_model_is_configurable_and_must_be_registered() -> None:
    settings = Settings.from_env({"YOLO_MODELS": "coco=/m/yolo11n.pt", "YOLO_DEFAULT_MODEL": "coco"})
    assert settings.default_model == "coco"
    with pytest.raises(SettingsError, match="YOLO_DEFAULT_MODEL"):
        Settings.from_env({"YOLO_DEFAULT_MODEL": "coco"})


def test_api_and_worker_fields_are_grouped() -> None:
    settings = Settings.from_env(
        {
            "API_BIND": "0.0.0.0:8080",
            "WEB_CONCURRENCY": "3",
            "FORWARDED_ALLOW_IPS": "*",
            "MAX_UPLOAD_BYTES": "1000",
            "SECRET_KEY": "",
            "PROMETHEUS_MULTIPROC_DIR": "/tmp/metrics",
            "WORKER_DEVICE": "cuda:1",
            "INFERENCE_BATCH_SIZE": "4",
            "YOLO_OFFLINE": "false",
            "YOLO_CONFIG_DIR": "/tmp/ultralytics",
            "RETENTION_DAYS": "7",
            "RETENTION_CLEANUP_INTERVAL_SECONDS": "2",
        }
    )
    assert (settings.api.bind, settings.api.processes, settings.api.forwarded_allow_ips) == ("0.0.0.0:8080", 3, "*")
    assert settings.api.max_upload_bytes == 1000 and settings.api.secret_key is None
    assert settings.api.metrics_dir == Path("/tmp/metrics")
    assert (settings.worker.device, settings.worker.inference_batch_size) == ("cuda:1", 4)
    assert settings.worker.ultralytics_offline is False
    assert settings.worker.ultralytics_config_dir == Path("/tmp/ultralytics")
    assert (settings.retention.days, settings.retention.cleanup_interval_seconds) == (7, 2)


@pytest.mark.parametrize(("raw", "expected"), [("00:00", (0, 0)), ("23:59", (23, 59)), (" 4:05 ", (4, 5))])
def test_cleanup_time_is_parsed(raw: str, expected: tuple[int, int]) -> None:
    assert Settings.from_env({"RETENTION_CLEANUP_TIME": raw}).retention.cleanup_time == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RETENTION_CLEANUP_TIME", "3"),
        ("RETENTION_CLEANUP_TIME", "24:00"),
        ("RETENTION_CLEANUP_TIME", "03:30:00"),
        ("WORKER_DEVICE", "gpu"),
        ("MAX_UPLOAD_BYTES", "lots"),
        ("YOLO_MODELS", "coco"),
        ("WORKER_PROCESSES", "0"),
        ("WORKER_INFERENCE_THREADS", "two"),
    ],
)
def test_bad_values_raise_settings_error(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_worker_processes_and_threads_default_to_the_cores_the_worker_may_use() -> None:
    defaults = Settings.from_env({})
    assert (defaults.worker.processes, defaults.worker.inference_threads) == (None, None)
    assert celery_config.from_settings(defaults)["worker_concurrency"] == "auto", "Celery's affinity-aware count"
    chosen = Settings.from_env({"WORKER_PROCESSES": "3", "WORKER_INFERENCE_THREADS": "2"})
    assert (chosen.worker.processes, chosen.worker.inference_threads) == (3, 2)
    assert celery_config.from_settings(chosen)["worker_concurrency"] == 3

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
    assert settings.models == {"shapes": str(BUNDLED_MODEL)}
    assert settings.default_model == "shapes"
    assert settings.retention.cleanup_time == (3, 30)
    assert settings.retention.cleanup_interval_seconds is None


def test_model_registry_keeps_the_bundled_model_first() -> None:
    settings = Settings.from_env({"YOLO_MODELS": "coco=/m/yolo11n.pt, shapes=/m/shapes.pt"})
    assert list(settings.models.items()) == [("shapes", "/m/shapes.pt"), ("coco", "/m/yolo11n.pt")]
    assert Settings.from_env({"YOLO_MODEL": "/m/mine.pt", "YOLO_MODELS": "shapes=/m/shapes.pt"}).models == {
        "shapes": "/m/mine.pt"
    }


def test_default_is_an_alias_of_shapes_wherever_a_model_is_named() -> None:
    old = Settings.from_env({"YOLO_MODELS": "default=/m/shapes.pt,coco=/m/yolo11n.pt", "YOLO_DEFAULT_MODEL": "default"})
    assert list(old.models) == ["shapes", "coco"] and old.models["shapes"] == "/m/shapes.pt"
    assert old.default_model == "shapes"
    assert [old.registry_name(n) for n in ("default", "shapes", "coco", "nope")] == ["shapes", "shapes", "coco", None]
    assert old.aliases_of("shapes") == ["default"] and old.aliases_of("coco") == []
    with pytest.raises(SettingsError, match="twice"):
        Settings.from_env({"YOLO_MODELS": "default=/m/a.pt,shapes=/m/b.pt"})


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


def test_webhook_settings() -> None:
    defaults = Settings.from_env({}).webhooks
    assert defaults.retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)  # the Standard Webhooks schedule
    assert (defaults.allow_private, defaults.timeout_seconds, defaults.public_url) == (
        False,
        10,
        "http://127.0.0.1:8000",
    )
    hooks = Settings.from_env(
        {"WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_RETRY_SCHEDULE": "0.2, 1", "PUBLIC_URL": "https://yolo.example/"}
    ).webhooks
    assert (hooks.allow_private, hooks.retry_schedule, hooks.public_url) == (True, (0.2, 1.0), "https://yolo.example")
    for bad in ("soon", "1,-1", "inf"):
        with pytest.raises(SettingsError, match="WEBHOOK_RETRY_SCHEDULE"):
            Settings.from_env({"WEBHOOK_RETRY_SCHEDULE": bad})
    with pytest.raises(SettingsError, match="WEBHOOK_TIMEOUT_SECONDS"):
        Settings.from_env({"WEBHOOK_TIMEOUT_SECONDS": "0"})


def test_worker_processes_and_threads_default_to_the_cores_the_worker_may_use() -> None:
    defaults = Settings.from_env({})
    assert (defaults.worker.processes, defaults.worker.inference_threads) == (None, None)
    assert celery_config.from_settings(defaults)["worker_concurrency"] == "auto", "Celery's affinity-aware count"
    chosen = Settings.from_env({"WORKER_PROCESSES": "3", "WORKER_INFERENCE_THREADS": "2"})
    assert (chosen.worker.processes, chosen.worker.inference_threads) == (3, 2)
    assert celery_config.from_settings(chosen)["worker_concurrency"] == 3

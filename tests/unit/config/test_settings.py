"""Settings come from the environment in one place, and a bad value stops start-up with a sentence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from gunicorn.config import Config

import celery_config
from config import Settings, SettingsError
from config.paths import BUNDLED_MODEL
from config.settings import declared_fields, model_name


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
    assert [model_name(n) for n in ("default", "shapes", "coco", "nope")] == ["shapes", "shapes", "coco", "nope"]
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
        ("WORKER_DEVICE", "cuda:one"),
        ("LOG_FORMAT", "xml"),
        ("YOLO_OFFLINE", "maybe"),
        ("WORKER_METRICS_PORT", "65536"),
        ("RETENTION_CLEANUP_INTERVAL_SECONDS", "0"),
    ],
)
def test_bad_values_raise_settings_error(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("raw", "networks"),
    [
        ("127.0.0.1", ["127.0.0.1/32"]),
        (" 10.0.0.0/8, ::1,", ["10.0.0.0/8", "::1/128"]),
        ("*", ["0.0.0.0/0", "::/0"]),
        ("127.0.0.1,*", ["0.0.0.0/0", "::/0"]),
    ],
)
def test_forwarded_allow_ips_are_parsed_as_gunicorn_reads_them(raw: str, networks: list[str]) -> None:
    parsed = Settings.from_env({"FORWARDED_ALLOW_IPS": raw}).api.forwarded_allow_networks
    assert [str(network) for network in parsed] == networks
    Config().set("forwarded_allow_ips", raw)  # gunicorn's own check accepts it


@pytest.mark.parametrize("raw", ["not-an-ip", "127.0.0.1,proxy.local", "10.0.0.1/8", "*, nope", "127.0.0.1, ,::1"])
def test_forwarded_allow_ips_that_gunicorn_refuses_stop_start_up(raw: str) -> None:
    with pytest.raises(SettingsError, match="FORWARDED_ALLOW_IPS"):
        Settings.from_env({"FORWARDED_ALLOW_IPS": raw})
    with pytest.raises(ValueError):
        Config().set("forwarded_allow_ips", raw)


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


INTEGER_BOUNDS = {
    name: next(rule.ge for rule in field.metadata if hasattr(rule, "ge"))
    for name, field in declared_fields().items()
    if int in getattr(field.annotation, "__args__", (field.annotation,))
    and any(hasattr(rule, "ge") for rule in field.metadata)
}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WORKER_ROUND_JOBS", "0", "WORKER_ROUND_JOBS must be an integer >= 1, got '0'"),
        ("INFERENCE_BATCH_SIZE", "0", "INFERENCE_BATCH_SIZE must be an integer >= 1, got '0'"),
        ("RETENTION_DAYS", "-3", "RETENTION_DAYS must be an integer >= 1, got '-3'"),
        ("MAX_UPLOAD_BYTES", "lots", "MAX_UPLOAD_BYTES must be an integer >= 1, got 'lots'"),
        ("WORKER_DEVICE", "gpu", "WORKER_DEVICE must be auto, cpu or cuda:N, got 'gpu'"),
        ("RETENTION_CLEANUP_TIME", "24:00", "RETENTION_CLEANUP_TIME must be a time of day, HH:MM, got '24:00'"),
        ("YOLO_MODELS", "coco", "YOLO_MODELS must be name=path,name=path, got 'coco': entry 'coco' is not name=path"),
        ("YOLO_DEFAULT_MODEL", "coco", "YOLO_DEFAULT_MODEL must be a name in YOLO_MODELS, got 'coco'"),
        ("VIDEO_SEGMENT_SECONDS", "0", "VIDEO_SEGMENT_SECONDS must be a number > 0, got '0'"),
        ("TILE_OVERLAP", "0.5", "TILE_OVERLAP must be a number >= 0 and < 0.5, got '0.5'"),
    ],
)
def test_a_bad_value_is_named_with_what_is_allowed(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: value})
    assert str(raised.value) == message


@pytest.mark.parametrize(("name", "low"), sorted(INTEGER_BOUNDS.items()))
def test_every_bound_is_checked_where_it_is_declared(name: str, low: int) -> None:
    """No clamp: one below the declared bound is refused, the bound itself is taken."""
    with pytest.raises(
        SettingsError, match=f"^{name} must be an integer (>= {low}|from {low} to [0-9]+), got '{low - 1}'$"
    ):
        Settings.from_env({name: str(low - 1)})
    Settings.from_env({name: str(low)})


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"WORKER_ROUND_JOBS": "0", "API_THREADS": "many", "WEBHOOK_RETRY_SCHEDULE": "1,-1,-2"})
    assert str(raised.value).split("; ") == [
        "API_THREADS must be an integer >= 1, got 'many'",
        "WORKER_ROUND_JOBS must be an integer >= 1, got '0'",
        "WEBHOOK_RETRY_SCHEDULE must be comma-separated seconds, each >= 0, got '1,-1,-2'",
    ]


def test_an_empty_value_counts_as_unset() -> None:
    settings = Settings.from_env(
        {"WORKER_ROUND_JOBS": "", "WORKER_PROCESSES": " ", "PUBLIC_URL": "", "YOLO_MODEL": "", "LOG_FORMAT": ""}
    )
    assert settings == Settings.from_env({})


def test_public_url_defaults_to_the_proxy() -> None:
    assert Settings.from_env({"PROXY_BIND": "0.0.0.0:9000"}).webhooks.public_url == "http://0.0.0.0:9000"


@pytest.mark.parametrize(
    ("value", "offline"), [("1", True), ("true", True), ("YES", True), ("0", False), ("false", False), ("no", False)]
)
def test_booleans_take_the_usual_spellings(value: str, offline: bool) -> None:
    settings = Settings.from_env({"YOLO_OFFLINE": value, "WEBHOOK_ALLOW_PRIVATE": value})
    assert (settings.worker.ultralytics_offline, settings.webhooks.allow_private) == (offline, offline)


def test_a_given_mapping_is_all_that_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in declared_fields():
        monkeypatch.setenv(name, "0")  # bad for most settings: any that leaked in would fail
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"WORKER_ROUND_JOBS": "3"}).worker == Settings().worker.model_copy(
        update={"round_jobs": 3}
    )
    with pytest.raises(SettingsError, match="WORKER_ROUND_JOBS must be an integer >= 1, got '0'"):
        Settings.from_env()  # no mapping: os.environ


def test_a_bad_value_stops_the_celery_app_at_start_up() -> None:
    env = {**os.environ, "WORKER_ROUND_JOBS": "0"}
    celery = Path(sys.executable).with_name("celery")
    done = subprocess.run([str(celery), "-A", "tasks", "report"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "WORKER_ROUND_JOBS must be an integer >= 1, got '0'" in done.stderr
    assert "Traceback" in done.stderr and done.stdout == ""


def test_every_setting_is_declared_with_a_variable_and_a_meaning() -> None:
    fields = declared_fields()
    assert len(fields) == 61
    integers = {name for name, field in fields.items() if field.annotation in (int, int | None)}
    assert len(integers) == 33 and integers == set(INTEGER_BOUNDS), "every integer setting declares its bound"
    for name, field in fields.items():
        assert name.isupper() and name.replace("_", "").isalnum(), name
        assert field.description and "\n" not in field.description, name

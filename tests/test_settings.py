"""Settings come from the environment in one place, and a bad value stops start-up with a sentence."""

from __future__ import annotations

import pytest

from storage.settings import BUNDLED_MODEL, Settings, SettingsError


def test_defaults_work_on_this_machine() -> None:
    settings = Settings.from_env({})
    assert settings.broker_url == "amqp://guest:guest@127.0.0.1:5672//"
    assert settings.models == {"default": str(BUNDLED_MODEL)}
    assert settings.retention_cleanup_time == (3, 30)


def test_model_registry_keeps_default_first() -> None:
    settings = Settings.from_env({"YOLO_MODELS": "coco=/m/yolo11n.pt, default=/m/shapes.pt"})
    assert list(settings.models.items()) == [("default", "/m/shapes.pt"), ("coco", "/m/yolo11n.pt")]


@pytest.mark.parametrize(("raw", "expected"), [("00:00", (0, 0)), ("23:59", (23, 59)), (" 4:05 ", (4, 5))])
def test_cleanup_time_is_parsed(raw: str, expected: tuple[int, int]) -> None:
    assert Settings.from_env({"RETENTION_CLEANUP_TIME": raw}).retention_cleanup_time == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RETENTION_CLEANUP_TIME", "3"),
        ("RETENTION_CLEANUP_TIME", "24:00"),
        ("RETENTION_CLEANUP_TIME", "03:30:00"),
        ("WORKER_DEVICE", "gpu"),
        ("MAX_UPLOAD_BYTES", "lots"),
        ("YOLO_MODELS", "coco"),
    ],
)
def test_bad_values_raise_settings_error(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})

"""Ultralytics' environment for the command-line tools: its settings folder under the var/ they are given."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config.ultralytics import configure_ultralytics_under


def test_the_tools_keep_ultralytics_settings_under_their_var_whatever_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "elsewhere"))
    for name in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL"):
        monkeypatch.delenv(name, raising=False)  # monkeypatch puts back what the call below sets
    settings_dir = configure_ultralytics_under(tmp_path / "var")
    assert settings_dir == tmp_path / "var" / "ultralytics" / "Ultralytics" and settings_dir.is_dir()
    assert os.environ["YOLO_CONFIG_DIR"] == str(tmp_path / "var" / "ultralytics")
    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "false"
    assert not (tmp_path / "elsewhere").exists()

"""Keep Ultralytics offline, with its settings inside var/: done before a worker, the trainer or a benchmark imports it.

Ultralytics reads its switches from environment variables, so this module writes
them from the worker's settings. It fetches Arial.ttf from the network when its
config folder lacks it; matplotlib (an Ultralytics dependency) ships DejaVu Sans,
which stands in for it. It never installs packages at run time here.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from config.paths import VAR_DIR
from config.settings import Settings, WorkerSettings


def configure_ultralytics(worker: WorkerSettings) -> Path:
    """Set Ultralytics' environment from ``worker`` and provide its fonts; return its settings folder."""
    os.environ["YOLO_OFFLINE"] = "1" if worker.ultralytics_offline else "0"
    os.environ["YOLO_CONFIG_DIR"] = str(worker.ultralytics_config_dir)
    os.environ["YOLO_AUTOINSTALL"] = "false"
    settings_dir = worker.ultralytics_config_dir / "Ultralytics"
    settings_dir.mkdir(parents=True, exist_ok=True)
    matplotlib = importlib.util.find_spec("matplotlib")
    if matplotlib and matplotlib.submodule_search_locations:
        font = Path(matplotlib.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            if font.is_file() and not (settings_dir / name).exists():
                shutil.copyfile(font, settings_dir / name)
    return settings_dir


def configure_ultralytics_under(var: Path = VAR_DIR) -> Path:
    """For the command-line tools (training, evaluation): the worker's settings from the environment, with
    Ultralytics' settings folder under ``var`` whatever the environment names; return that folder."""
    worker = Settings.from_env().worker.model_copy(update={"ultralytics_config_dir": var / "ultralytics"})
    return configure_ultralytics(worker)

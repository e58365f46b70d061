"""Where the code finds the model it ships, and where a developer's checkout writes.

The bundled weights are package data of ``models`` (a folder of data, no code): found
through importlib.resources, they are ``models/`` in a checkout and in site-packages
once the wheel is installed, so no process needs the source tree on its path.
``PROJECT_ROOT`` and ``VAR_DIR`` mean the checkout (the tools, the tests and a
developer's defaults); a deployment sets the paths it writes (``STORAGE_ROOT``,
``YOLO_CONFIG_DIR``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Everything the processes write on a developer machine (storage, keys, Ultralytics' settings).
VAR_DIR = PROJECT_ROOT / "var"
# A path of its own, not a Traversable: the settings name it, make model writes it, exports go beside it.
BUNDLED_MODEL = Path(str(files("models") / "shapes-yolov8n.pt"))

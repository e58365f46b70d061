"""Where the checkout keeps what the code ships and writes: the one definition of the project root."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Everything the processes write on a developer machine (storage, keys, Ultralytics' settings).
VAR_DIR = PROJECT_ROOT / "var"
BUNDLED_MODEL = PROJECT_ROOT / "models" / "shapes-yolov8n.pt"
SCHEMA_FILE = PROJECT_ROOT / "schema.sql"

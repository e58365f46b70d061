"""What a resumable upload gives and where it keeps its state, apart from the protocol (:mod:`yolo_jobs_client.tus`):
importing tuspy (and aiohttp with it) costs every command a third of a second, so only ``upload`` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 64 * 2**20

# Called with the bytes the server holds and the file's size.
FileProgress = Callable[[int, int], None]


def default_state_file() -> Path:
    """``$XDG_STATE_HOME/yolo-jobs/uploads.json`` (``~/.local/state`` without it; ``%LOCALAPPDATA%`` on Windows)."""
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "yolo-jobs" / "uploads.json"


@dataclass(frozen=True)
class UploadedFile:
    """A file the server stored: its id (what jobs refer to), SHA-256 and size, the upload that sent it,
    and the offset this run started at (0 for a new upload, more when it resumed one)."""

    path: Path
    file_id: str
    sha256: str
    size: int
    upload_id: str
    resumed_at: int

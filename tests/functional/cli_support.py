"""What the CLI's functional tests share: the ``yolo-jobs`` command, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from config.paths import PROJECT_ROOT


def cli_env(url: str, key: str | None) -> dict[str, str]:
    """This process's environment with the URL and key the command reads, and nothing else of ``YOLO_JOBS_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_JOBS_")}
    env["YOLO_JOBS_URL"] = url
    if key is not None:
        env["YOLO_JOBS_API_KEY"] = key
    return env


def cli_argv(*args: str) -> list[str]:
    """``python -m yolo_jobs_client`` (what the ``yolo-jobs`` script runs) with ``args``."""
    return [sys.executable, "-m", "yolo_jobs_client", *args]


def yolo_jobs(
    url: str, key: str | None, *args: str, timeout: float = 300, cwd: Path = PROJECT_ROOT
) -> subprocess.CompletedProcess[str]:
    """Run the command to its end in ``cwd``, the URL and key in its environment."""
    return subprocess.run(
        cli_argv(*args), env=cli_env(url, key), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )

"""Benchmark results as JSON under ``var/bench/``, so a run can be compared with the last one.

Each suite's run is one file, ``var/bench/<suite>/<UTC time>.json``: its figures,
with the time, the host's cores and its load average (other work on the machine
moves every figure).
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from config.paths import VAR_DIR

REPORT_DIR = VAR_DIR / "bench"


def previous(suite: str, directory: Path = REPORT_DIR) -> dict[str, float]:
    """The figures of the suite's latest recorded run; empty when there is none."""
    runs = sorted((directory / suite).glob("*.json"))
    return json.loads(runs[-1].read_text())["figures"] if runs else {}


def write(suite: str, figures: dict[str, float], directory: Path = REPORT_DIR) -> Path:
    """Record one run of ``suite``; return the file written."""
    now = datetime.now(UTC)
    folder = directory / suite
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{now:%Y%m%dT%H%M%S%fZ}.json"
    record = {
        "suite": suite,
        "time": now.isoformat(),
        "host": socket.gethostname(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "figures": figures,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path

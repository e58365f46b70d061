"""Benchmark results, appended to one dated file, ``docs/benchmarks.md``, that people read and git keeps.

Every suite's run becomes one entry there: when it ran, the command, the git commit, the
machine (CPU model, cores, load average at the start and at the end: other work on the
machine moves every figure), and its figures beside the suite's previous entry. The
file is Markdown so that it reads as the project's benchmark log; :func:`previous`
reads the figures back from the same tables, so nothing else keeps a copy.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from config.paths import PROJECT_ROOT

RESULTS_FILE = PROJECT_ROOT / "docs" / "benchmarks.md"
HEADING = re.compile(r"^## (?P<time>\d{4}-\d\d-\d\d \d\d:\d\d UTC) · (?P<suite>\S+)$")
FIGURE_ROW = re.compile(r"^\| (?P<label>.+?) \| (?P<value>-?[\d.]+(?:e[-+]?\d+)?|nan|inf) \|")


@dataclass(frozen=True)
class Run:
    """One suite's measured run, with what it ran on."""

    suite: str
    command: str
    started: datetime
    seconds: float
    load_at_start: tuple[float, float, float]
    load_at_end: tuple[float, float, float]
    figures: dict[str, float]


def measure(suite: str, command: str, run: Callable[[], dict[str, float]]) -> Run:
    """Run one suite, noting the time and the load average around it."""
    started, load_at_start, clock = datetime.now(UTC), os.getloadavg(), time.perf_counter()
    figures = run()
    return Run(suite, command, started, time.perf_counter() - clock, load_at_start, os.getloadavg(), figures)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's name as Linux reports it (``model name``), or ``unknown CPU``."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "unknown CPU"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else "unknown CPU"


def machine() -> str:
    """CPU model and cores: those this process may use, of those online."""
    return f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores usable of {os.cpu_count()}"


def commit(root: Path = PROJECT_ROOT, results: Path = RESULTS_FILE) -> str:
    """The checkout's commit, marked when tracked files differ from it (the results file aside)."""
    git = ["git", "-C", str(root)]
    inside = results.resolve().is_relative_to(root.resolve())
    excluded = [f":(exclude){results.resolve().relative_to(root.resolve())}"] if inside else []
    try:
        head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True)
        changes = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" with uncommitted changes" if changes.stdout.strip() else "")


def stored_label(label: str) -> str:
    """A figure's label as its row in the results file holds it (and :func:`previous` reads it back)."""
    return label.strip().replace("|", "/")


def _loads(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{value:.2f}" for value in load)


def entry(run: Run, last: dict[str, float], machine: str, commit: str) -> str:
    """The Markdown entry for one run: a dated heading, what it ran on, its figures beside the last ones."""
    lines = [
        f"## {run.started:%Y-%m-%d %H:%M} UTC · {run.suite}",
        "",
        f"- command: `{run.command}` ({run.seconds:.0f} s)",
        f"- commit: {commit}",
        f"- machine: {machine}",
        f"- load average (1 / 5 / 15 min): {_loads(run.load_at_start)} at the start,"
        f" {_loads(run.load_at_end)} at the end",
        "",
        "| figure | this run | previous entry |",
        "|---|---|---|",
    ]
    for label, value in run.figures.items():
        stored = stored_label(label)
        before = f"{last[stored]:.3f}" if stored in last else ""
        lines.append(f"| {stored} | {value:.3f} | {before} |")
    return "\n".join(lines) + "\n"


def previous(suite: str, path: Path = RESULTS_FILE) -> dict[str, float]:
    """The figures of the suite's latest entry in the results file; empty when it has none."""
    figures: dict[str, float] = {}
    current = None
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("## "):
            heading = HEADING.match(line)
            current = heading["suite"] if heading else None
            if current == suite:
                figures = {}
        elif current == suite and (row := FIGURE_ROW.match(line)):
            figures[row["label"]] = float(row["value"])
    return figures


def append(run: Run, path: Path = RESULTS_FILE) -> dict[str, float]:
    """Add the run's entry at the end of the results file; return the suite's previous figures."""
    last = previous(run.suite, path)
    with path.open("a") as results:
        results.write("\n" + entry(run, last, machine(), commit(results=path)))
    return last

"""docs/configuration.md is what ``python -m config.reference`` prints from the declarations: it cannot drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from config.reference import render
from config.settings import declared_fields

CONFIGURATION_MD = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
REGENERATE = ".venv/bin/python -m config.reference > docs/configuration.md"


def test_the_configuration_reference_is_generated_from_the_declarations() -> None:
    assert CONFIGURATION_MD.read_text() == render(), f"docs/configuration.md is out of date: run `{REGENERATE}`"


def test_every_setting_has_a_row_with_its_default_what_it_allows_and_its_meaning() -> None:
    rows = {line.split(" | ")[0].strip("|` "): line for line in render().splitlines() if line.startswith("| `")}
    assert list(rows) == list(declared_fields())
    for name, line in rows.items():
        variable, default, allowed, meaning = (cell.strip() for cell in line.strip("|").split(" | "))
        assert variable == f"`{name}`" and default and allowed and meaning, name
    assert rows["WORKER_ROUND_JOBS"] == (
        "| `WORKER_ROUND_JOBS` | `32` | an integer >= 1 | at most this many jobs a worker process holds at once:"
        " its task's, and the small ready jobs it takes into the round (`tasks/intake.py`; `1`: each job alone) |"
    )
    assert "| `WORKER_METRICS_PORT` | `9808` | an integer from 0 to 65535 |" in rows["WORKER_METRICS_PORT"]
    assert "| `WORKER_PROCESSES` | one per core the worker may use" in rows["WORKER_PROCESSES"]
    assert "/work/" not in render() and str(Path.home()) not in render(), "no path of this machine"


def test_the_command_prints_the_reference() -> None:
    done = subprocess.run([sys.executable, "-m", "config.reference"], capture_output=True, text=True, check=True)
    assert done.stdout == render()

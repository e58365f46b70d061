"""``make bench`` appends each suite's run to one dated results file, and reads the last one back from it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from config.paths import PROJECT_ROOT

ENTRY_HEADING = re.compile(r"^## \d{4}-\d\d-\d\d \d\d:\d\d UTC · bench\.fake$", re.MULTILINE)


def fake_run(figures: dict[str, float]) -> report.Run:
    return report.Run(
        suite="bench.fake",
        command="python -m bench bench.fake",
        started=datetime(2026, 12, 7, 9, 5, tzinfo=UTC),
        seconds=12.4,
        load_at_start=(1.5, 1.25, 1.0),
        load_at_end=(0.5, 0.75, 1.0),
        figures=figures,
    )


def test_an_appended_entry_is_dated_names_commit_and_machine_and_is_read_back(tmp_path: Path) -> None:
    results = tmp_path / "benchmarks.md"
    results.write_text("# Benchmark results\n")

    first = report.append(fake_run({"images/s": 25.8, "  SQL per POST": 15.0}), results)
    assert first == {}
    measured = report.measure("bench.fake", "python -m bench bench.fake", lambda: {"images/s": 30.125})
    second = report.append(measured, results)

    text = results.read_text()
    assert text.startswith("# Benchmark results\n")
    assert len(ENTRY_HEADING.findall(text)) == 2
    assert "## 2026-12-07 09:05 UTC · bench.fake\n" in text
    assert "- command: `python -m bench bench.fake` (12 s)" in text
    assert "- load average (1 / 5 / 15 min): 1.50 / 1.25 / 1.00 at the start, 0.50 / 0.75 / 1.00 at the end" in text
    commits = re.findall(r"^- commit: (\S+)", text, re.MULTILINE)
    assert len(commits) == 2 and all(re.fullmatch(r"[0-9a-f]{12}", c) for c in commits)
    machines = re.findall(r"^- machine: (.+), (\d+) cores usable of (\d+)$", text, re.MULTILINE)
    assert len(machines) == 2 and machines[0][0] == report.cpu_model() and int(machines[0][1]) >= 1
    assert "| images/s | 30.125 | 25.800 |" in text
    assert second == {"images/s": 25.8, "SQL per POST": 15.0}
    assert report.previous("bench.fake", results) == {"images/s": 30.125}
    assert report.previous("bench.other", results) == {}


def test_the_previous_figures_are_the_suites_own_latest_entry(tmp_path: Path) -> None:
    results = tmp_path / "benchmarks.md"
    report.append(fake_run({"images/s": 1.0}), results)
    other = report.Run("bench.other", "python -m bench bench.other", datetime.now(UTC), 1.0, (0, 0, 0), (0, 0, 0), {})
    report.append(fake_run({"images/s": 2.0}), results)
    report.append(other, results)
    with results.open("a") as file:
        file.write("\n## 2026-12-06 22:21 UTC · bench.fake, moved from an older log\n\n| images/s | 9.0 |\n")
    assert report.previous("bench.fake", results) == {"images/s": 2.0}


def test_make_bench_appends_to_the_repositorys_results_file() -> None:
    assert report.RESULTS_FILE == PROJECT_ROOT / "docs" / "benchmarks.md"
    assert report.RESULTS_FILE.read_text().startswith("# Benchmark results")

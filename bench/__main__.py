"""``python -m bench`` (``make bench``): every benchmark, each with the baseline it is measured against.

Each suite's run is appended, dated, with the commit and the machine, to ``docs/benchmarks.md``
(``bench/report.py``), and printed beside the suite's previous entry there.
"""

from __future__ import annotations

import importlib
import sys

from bench import report

SUITES = (
    "bench.upload",
    "bench.api_post",
    "bench.pipeline",
    "bench.backends",
    "bench.cleanup_bench",
    "bench.cli",
    "bench.resumable",
    "bench.rerun",
    "bench.video",
    "bench.predict",
)


def main(names: list[str]) -> None:
    for name in names or SUITES:
        run = report.measure(name, f"python -m bench {name}", importlib.import_module(name).run)
        last = report.append(run)
        print(f"\n== {name} ({run.seconds:.0f} s; appended to {report.RESULTS_FILE})")
        print(f"  {'':<62} {'this run':>12} {'last run':>12}")
        for label, value in run.figures.items():
            stored = report.stored_label(label)
            before = f"{last[stored]:>12.3f}" if stored in last else f"{'':>12}"
            print(f"  {label:<62} {value:>12.3f} {before}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""``python -m bench`` (``make bench``): every benchmark, each with the baseline it is measured against.

Each suite's figures are also written under ``var/bench/`` (``bench/report.py``) and
printed beside the last recorded run's.
"""

from __future__ import annotations

import importlib
import sys
import time

from bench import report

SUITES = ("bench.upload", "bench.api_post", "bench.pipeline", "bench.backends", "bench.cleanup_bench", "bench.cli")


def main(names: list[str]) -> None:
    for name in names or SUITES:
        started = time.perf_counter()
        figures = importlib.import_module(name).run()
        last = report.previous(name)
        path = report.write(name, figures)
        print(f"\n== {name} ({time.perf_counter() - started:.0f} s; {path})")
        print(f"  {'':<62} {'this run':>12} {'last run':>12}")
        for label, value in figures.items():
            before = f"{last[label]:>12.3f}" if label in last else f"{'':>12}"
            print(f"  {label:<62} {value:>12.3f} {before}")


if __name__ == "__main__":
    main(sys.argv[1:])

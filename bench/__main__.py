"""``python -m bench`` (``make bench``): every benchmark, each with the baseline it is measured against."""

from __future__ import annotations

import importlib
import sys
import time

SUITES = ("bench.upload", "bench.api_post", "bench.pipeline", "bench.cleanup_bench", "bench.cli")


def main(names: list[str]) -> None:
    for name in names or SUITES:
        started = time.perf_counter()
        figures = importlib.import_module(name).run()
        print(f"\n== {name} ({time.perf_counter() - started:.0f} s)")
        for label, value in figures.items():
            print(f"  {label:<45} {value:>12.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])

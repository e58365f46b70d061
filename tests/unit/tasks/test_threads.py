"""Inference threads per worker process: the cores the worker may use, shared among the pool's processes."""

from __future__ import annotations

import subprocess
import sys

from celery.utils.sysinfo import cpu_budget

from tasks.runtime import threads_per_process


def test_the_pool_shares_the_allowed_cores_and_never_gets_fewer_than_one_thread() -> None:
    cores = cpu_budget().count
    assert threads_per_process(1) == cores
    assert threads_per_process(cores) == 1
    assert threads_per_process(cores * 4) == 1


def test_the_affinity_mask_limits_the_cores() -> None:
    script = "from tasks.runtime import threads_per_process; print(threads_per_process(1))"
    pinned = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert pinned.stdout.strip() == "1", "a worker pinned to one core runs one thread"

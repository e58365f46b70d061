"""Processes measured side by side: each prepares alone (loads its model), then all start their work at once.

For the figures that depend on several worker processes sharing the cores: the benchmark's backend
alone in the worker's set-up, and the test that two single-thread processes each get a core.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

Prepare = Callable[..., Callable[[], Any]]


def side_by_side(prepare: Prepare, arguments: Sequence[tuple[Any, ...]], timeout: float = 600) -> list[Any]:
    """``prepare(*args)`` in a fresh process per ``args``; once all are prepared, each runs the work it returned.

    Returns what each work returned, in the order they finished. ``prepare`` must be a module's
    top-level function (the processes are spawned).
    """
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    processes = [context.Process(target=_run, args=(prepare, args, ready, go, results)) for args in arguments]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=timeout)
        go.set()
        return [results.get(timeout=timeout) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=timeout)


def _run(prepare: Prepare, args: tuple[Any, ...], ready: Any, go: Any, results: Any) -> None:
    work = prepare(*args)
    ready.put(True)
    go.wait()
    results.put(work())

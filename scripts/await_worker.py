"""``python -m scripts.await_worker [SECONDS]``: return once a Celery worker answers a ping, or after SECONDS (60).

``make run`` starts Flower after it. Flower asks the workers about themselves once, as it starts
(``inspect stats``, ``registered``, …), and logs "Inspect method … failed" for each question nobody
answered. Started beside the worker, it always asked before the worker listened, so every ``make run``
began with four warnings about a failure that was not one. Started once a worker answers, Flower gets
its answers, and that warning means again what it says. Past SECONDS this says so and returns all the
same: Flower then starts without a worker, and its warnings are real.
"""

from __future__ import annotations

import sys
import time

from celery import Celery

import celery_config
from config import Settings

DEFAULT_SECONDS = 60.0
# How long one ping waits for answers; a worker that is up answers within milliseconds.
PING_SECONDS = 1.0


def await_worker(app: Celery, seconds: float) -> bool:
    """Whether a worker answered a ping within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if app.control.ping(timeout=PING_SECONDS):
            return True
    return False


def main(argv: list[str]) -> None:
    seconds = float(argv[0]) if argv else DEFAULT_SECONDS
    app = Celery("await-worker", config_source=celery_config.from_settings(Settings.from_env()))
    if not await_worker(app, seconds):
        print(f"no Celery worker answered in {seconds:g} s; Flower starts without one", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

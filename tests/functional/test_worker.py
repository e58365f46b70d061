"""Real ``celery -A tasks worker`` processes: one model load per child.

Kills, outages and leases are in ``test_job_lifecycle.py``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from flask import Flask

from harness.images import image_bytes
from harness.processes import start_worker, wait_until
from storage import Storage
from tests.conftest import MakeApp
from tests.helpers import job_state, submit


@pytest.fixture()
def isolated_app(make_app: MakeApp, isolated_env: dict[str, str]) -> Flask:
    return make_app(isolated_env)


def test_model_loads_once_per_child_process(
    isolated_env: dict[str, str], isolated_app: Flask, storage: Storage, logs_dir: Path
) -> None:
    worker = start_worker(isolated_env, logs_dir / "worker-model-loads.log", queues="inference", concurrency=2)
    try:
        job_ids = [submit(isolated_app, [image_bytes(64, 64, seed=900 + i)]) for i in range(10)]
        wait_until(lambda: all(job_state(storage, j).status == "succeeded" for j in job_ids), 180, what="10 jobs")
        lines = worker.json_log_lines()
    finally:
        worker.stop()
    loads = [line for line in lines if line["message"].startswith("model loaded")]
    task_pids = {line["pid"] for line in lines if line["message"].startswith("job started")}
    print(
        f"\nmodel loads: {len(loads)} for {len(job_ids)} jobs, pids {sorted(Counter(x['pid'] for x in loads).items())}"
    )
    assert len(loads) == 2, loads
    assert len({line["pid"] for line in loads}) == 2
    assert worker.pid not in {line["pid"] for line in loads}, "the parent process must never load the model"
    assert task_pids <= {line["pid"] for line in loads}
    for line in loads:
        assert line["processName"].startswith("ForkPoolWorker")
        assert "weights=" in line["message"] and "device=cpu" in line["message"] and "seconds=" in line["message"]

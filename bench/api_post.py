"""What one job submission costs the API: SQL statements, CPU time and Redis commands per POST.

- Statements: the app runs in this process with SQLAlchemy's events counting what
  reaches PostgreSQL (each statement, each connection check, and BEGIN and COMMIT
  of each transaction).
- CPU: a real gunicorn (one process) answers :data:`POSTS` submissions one after the
  other; its CPU time comes from ``/proc``.
- Redis: ``MONITOR`` records every command on the run's own Redis database (the
  result backend, and the rate limiter's counters) while those POSTs run.

No worker runs: the jobs stay queued, which costs the API the same.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import requests

from app import create_app, extensions
from bench.environment import BenchStack, bench_stack
from config import Settings
from harness.costs import RedisMonitor, counting_statements
from harness.images import image_bytes
from harness.processes import start_api

POSTS = 200
GENEROUS_QUOTAS = {"QUOTA_JOBS_PER_MINUTE": "1000000", "QUOTA_ACTIVE_JOBS": "1000000"}


def statements_per_post(stack: BenchStack, posts: int = 20) -> dict[str, float]:
    app = create_app(Settings.from_env({**stack.env, **GENEROUS_QUOTAS}))
    engine = app.extensions[extensions.EXTENSION].storage.database.engine
    client = app.test_client()
    logging.disable(logging.INFO)  # the app's line per request would bury the figures
    try:
        client.post("/api/v1/jobs", headers=stack.auth, data={"image": (io.BytesIO(image_bytes(seed=0)), "a.png")})
        with counting_statements(engine) as counts:
            for seed in range(1, posts + 1):
                data = {"image": (io.BytesIO(image_bytes(seed=seed)), "a.png")}
                response = client.post("/api/v1/jobs", headers=stack.auth, data=data)
                assert response.status_code == 202, response.text
    finally:
        logging.disable(logging.NOTSET)
        extensions.dispose(app)
    figures = {f"  {kind} per POST": n / posts for kind, n in sorted(counts.items())}
    return {"SQL statements per POST (in all)": sum(counts.values()) / posts, **figures}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gunicorn_per_post(stack: BenchStack, posts: int = POSTS) -> dict[str, float]:
    env = {**stack.env, **GENEROUS_QUOTAS, "WEB_CONCURRENCY": "1"}
    server, base_url = start_api(env, stack.workdir / "gunicorn-posts.log")
    bodies = [image_bytes(seed=10_000 + seed) for seed in range(posts + 1)]
    try:
        worker = int(Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()[0])
        with requests.Session() as session:
            session.headers.update(stack.auth)

            def post(body: bytes) -> None:
                response = session.post(f"{base_url}/api/v1/jobs", files={"image": ("a.png", body)}, timeout=30)
                assert response.status_code == 202, response.text

            post(bodies[0])  # connections and lazy imports are made on the first one
            monitor = RedisMonitor(stack.env["CELERY_RESULT_BACKEND"])
            cpu_before = cpu_seconds(worker)
            for body in bodies[1:]:
                post(body)
            cpu = cpu_seconds(worker) - cpu_before
            commands = monitor.stop()
    finally:
        server.stop()
    figures = {f"  Redis {name} per POST": n / posts for name, n in sorted(commands.items())}
    return {
        "API CPU ms per POST (gunicorn)": cpu * 1000 / posts,
        "Redis commands per POST": sum(commands.values()) / posts,
        **figures,
    }


def run() -> dict[str, float]:
    with bench_stack(**GENEROUS_QUOTAS) as stack:
        return {**statements_per_post(stack), **gunicorn_per_post(stack)}

"""A throwaway stack for benchmarks: its own database, vhost, Redis db and storage folder; and the API behind
nginx (``python -m proxy``), as it is deployed, for the suites whose figures depend on the proxy."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from accounts.keys import create_key
from harness.processes import ServiceProcess, start_api, start_proxy
from harness.services import ephemeral_services
from storage import Storage


@dataclass
class BenchStack:
    env: dict[str, str]
    workdir: Path
    # The Authorization header of a key made for the run (every API call needs one).
    auth: dict[str, str]

    @property
    def key(self) -> str:
        """The run's API key itself, for clients that take it alone."""
        return self.auth["Authorization"].removeprefix("Bearer ")


def _bench_key(env: dict[str, str]) -> str:
    storage = Storage(env["DATABASE_URL"], Path(env["STORAGE_ROOT"]))
    try:
        with storage.database.transaction() as session:
            return create_key(session, "bench", label="make bench")
    finally:
        storage.dispose()


@contextmanager
def bench_stack(**overrides: str) -> Iterator[BenchStack]:
    """Services of this benchmark run only, with an API key of its own, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="yolo-bench-") as tmp:
        workdir = Path(tmp)
        with ephemeral_services(f"bench_{uuid.uuid4().hex[:8]}", workdir / "storage", **overrides) as env:
            yield BenchStack(env, workdir, {"Authorization": f"Bearer {_bench_key(env)}"})


@dataclass
class ProxiedApi:
    """gunicorn, and nginx in front of it: clients use ``url`` (nginx's)."""

    gunicorn: ServiceProcess
    url: str


@contextmanager
def proxied_api(stack: BenchStack, **overrides: str) -> Iterator[ProxiedApi]:
    """A real gunicorn and ``python -m proxy`` (nginx) on free ports in front of it, stopped afterwards."""
    env = {**stack.env, **overrides}
    gunicorn, api_url = start_api(env, stack.workdir / "gunicorn.log")
    try:
        nginx, url = start_proxy(
            env, api_url.removeprefix("http://"), stack.workdir / "nginx", stack.workdir / "nginx.log"
        )
    except BaseException:
        gunicorn.stop()
        raise
    try:
        yield ProxiedApi(gunicorn, url)
    finally:
        nginx.stop()
        gunicorn.stop()

"""A throwaway stack for benchmarks: its own database, vhost, Redis db and storage folder."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from accounts.keys import create_key
from harness.services import ephemeral_services
from storage import Storage


@dataclass
class BenchStack:
    env: dict[str, str]
    workdir: Path
    # The Authorization header of a key made for the run (every API call needs one).
    auth: dict[str, str]


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

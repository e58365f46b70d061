"""A throwaway stack for benchmarks: its own database, vhost, Redis db and storage folder."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests import support


@dataclass
class BenchStack:
    env: dict[str, str]
    workdir: Path


@contextmanager
def bench_stack(**overrides: str) -> Iterator[BenchStack]:
    """Services of this benchmark run only, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="yolo-bench-") as tmp:
        workdir = Path(tmp)
        with support.ephemeral_services(f"bench_{uuid.uuid4().hex[:8]}", workdir / "storage", **overrides) as env:
            yield BenchStack(env, workdir)

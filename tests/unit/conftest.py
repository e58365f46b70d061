"""Unit fixtures: storage on the test module's own PostgreSQL database, emptied before each test.

Unit tests talk to the real database (``module_database_url``, made from
``schema.sql`` once per module) but to no broker, worker or API.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from storage import Storage


@pytest.fixture()
def store(module_database_url: str, tmp_path: Path) -> Iterator[Storage]:
    """Storage on the module's database, emptied first, with a storage root of this test's own."""
    storage = Storage(module_database_url, tmp_path / "storage")
    storage.blobs.ensure_layout()
    with storage.database.transaction() as session:
        session.execute(
            text("TRUNCATE results, uploads, idempotency_keys, jobs, stored_files, models, api_keys, tenants CASCADE")
        )
    yield storage
    storage.dispose()

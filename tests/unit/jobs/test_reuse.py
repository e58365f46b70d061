"""The reuse key names everything that decides a result, and one query finds a tenant's earlier results of many keys."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import event

from harness.images import image_bytes
from jobs.lifecycle import FileResult, Provenance
from jobs.reuse import Reusable, reusable_results, reuse_key
from storage import Storage
from storage.tables import Upload
from tests.helpers import add_key, complete_job, create_queued_job

PARTS: dict[str, Any] = {
    "file_sha256": "f" * 64,
    "weights_sha256": "w" * 64,
    "conf": 0.25,
    "iou": 0.7,
    "imgsz": 640,
    "backend": "openvino",
    "precision": "fp32",
}


def test_the_key_changes_with_every_part_and_only_with_them() -> None:
    key = reuse_key(**PARTS)
    assert key is not None and len(key) == 64 and key == reuse_key(**PARTS)
    changed = {
        "file_sha256": "e" * 64,
        "weights_sha256": "v" * 64,
        "conf": 0.3,
        "iou": 0.5,
        "imgsz": 320,
        "backend": "pytorch",
        "precision": "fp16",
    }
    for name, value in changed.items():
        assert reuse_key(**{**PARTS, name: value}) != key, name
    # a REAL column's 0.25 and its float64 reading are the same threshold
    assert reuse_key(**{**PARTS, "conf": 0.25000000372529}) == key


@pytest.mark.parametrize("missing", ["weights_sha256", "file_sha256"])
def test_no_key_without_a_digest(missing: str) -> None:
    assert reuse_key(**{**PARTS, missing: None if missing == "weights_sha256" else ""}) is None


def finished_with_key(store: Storage, tenant_id: uuid.UUID, key: str, error: str | None = None) -> None:
    def result_of(upload: Upload) -> FileResult:
        made = Provenance(key, "w" * 64, "openvino", "fp32")
        box = {"name": "a", "class": 0, "confidence": 0.5, "box": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}}
        return FileResult(upload.id, 20, 10, [] if error else [box], error, made)

    job_id = create_queued_job(store, image_bytes(seed=hash(key) % 1000), tenant_id=tenant_id)
    complete_job(store, job_id, result_of)


def test_one_statement_finds_the_tenants_results_of_many_keys_and_never_an_error(store: Storage) -> None:
    tenant_id = add_key(store, f"keys-{uuid.uuid4().hex[:8]}").tenant_id
    other = add_key(store, f"keys-{uuid.uuid4().hex[:8]}").tenant_id
    keys = [uuid.uuid4().hex * 2 for _ in range(4)]
    finished_with_key(store, tenant_id, keys[0])
    finished_with_key(store, tenant_id, keys[0])
    finished_with_key(store, tenant_id, keys[1], error="the file could not be decoded as an image")
    finished_with_key(store, other, keys[2])
    statements: list[str] = []
    engine = store.database.engine

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        with store.database.transaction() as session:
            found = reusable_results(session, tenant_id, keys)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert list(found) == [keys[0]]
    box = {"name": "a", "class": 0, "confidence": 0.5, "box": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}}
    assert found[keys[0]] == Reusable(20, 10, [box])
    assert len([s for s in statements if "results" in s]) == 1
    with store.database.transaction() as session:
        assert set(reusable_results(session, other, keys)) == {keys[2]}
        assert reusable_results(session, tenant_id, []) == {}

"""Helpers for the tests of jobs on stored files: a tenant of the test's own, and files it holds outside any job.

A finished resumable upload leaves a stored file and a ``tenant_files`` row; these helpers write
the same rows directly (the tus server has its own tests), so a test sets up thousands in a blink.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from sqlalchemy import update

from files.ownership import add_tenant_file
from storage import Storage
from storage.files import store_incoming
from storage.locks import lock_digests
from storage.tables import StoredFile
from tests.helpers import TestKey, add_key, new_upload


@contextmanager
def tenant_session(storage: Storage, name: str) -> Iterator[tuple[TestKey, requests.Session]]:
    """A new tenant (``name`` and a random suffix) and a ``requests`` session sending its key."""
    key = add_key(storage, f"{name}-{uuid.uuid4().hex[:8]}")
    with requests.Session() as session:
        session.headers.update(key.headers)
        yield key, session


def own_image(storage: Storage, tenant_id: uuid.UUID, data: bytes, filename: str) -> uuid.UUID:
    """Store ``data`` (an image) as the tenant's own file named ``filename``, as a finished upload does."""
    upload = new_upload(storage.blobs, data, filename)
    with storage.database.transaction() as session:
        lock_digests(session, [upload.incoming.sha256])
        stored, _ = store_incoming(session, storage.blobs, upload.incoming, upload.info)
        add_tenant_file(session, tenant_id, stored.id, filename)
        return stored.id


def own_other_file(storage: Storage, tenant_id: uuid.UUID, data: bytes, filename: str) -> uuid.UUID:
    """A stored file of the tenant that is not an image (no width or height): its row only."""
    digest = hashlib.sha256(data).hexdigest()
    with storage.database.transaction() as session:
        file = StoredFile(
            id=uuid.uuid4(),
            sha256=digest,
            size=len(data),
            content_type="application/octet-stream",
            width=None,
            height=None,
            path=f"blobs/{digest[:2]}/{digest[2:4]}/{digest}",
        )
        session.add(file)
        session.flush()
        add_tenant_file(session, tenant_id, file.id, filename)
        return file.id


def expire_bytes(storage: Storage, file_id: uuid.UUID) -> None:
    """Mark the stored file's bytes deleted, as retention does."""
    with storage.database.transaction() as session:
        session.execute(update(StoredFile).where(StoredFile.id == file_id).values(deleted_at=StoredFile.created_at))


def submit_json(session: requests.Session, api_url: str, body: Any, **headers: str) -> requests.Response:
    return session.post(f"{api_url}/api/v1/jobs", json=body, headers=headers, timeout=60)

"""Test helpers shared by every module: API keys and a client that sends one, submitting jobs (in-process
or over HTTP) and waiting for them.

``wait_for_job`` (polling a running API) lives in :mod:`harness.processes`, shared with the benchmarks.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import TestResponse, encode_multipart

from accounts.keys import create_key, key_hash
from app.extensions import EXTENSION
from harness.processes import wait_for_job, wait_until
from jobs.lifecycle import FileResult, Finishing, JobParams, NewUpload, begin_attempt, create_job, finish_jobs
from jobs.queries import find_job
from storage import Storage
from storage.blobs import BlobStore
from storage.images import identify_image
from storage.tables import ApiKey, Job, Upload

# The lease of an attempt a test runs by hand, as a worker would.
LEASE = timedelta(minutes=5)
# The tenant of the keys the fixtures make, and where an app keeps the key its test client sends.
TEST_TENANT = "test"
TEST_KEY = "TEST_API_KEY"


@dataclass(frozen=True)
class TestKey:
    """An API key a test made, with what it stands for."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    key: str
    tenant: str
    tenant_id: uuid.UUID
    admin: bool

    @property
    def prefix(self) -> str:
        return self.key.split("_")[1]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def add_key(storage: Storage, tenant: str, admin: bool = False, label: str = "tests") -> TestKey:
    """Make a key of ``tenant`` (created when missing) in ``storage``'s database."""
    with storage.database.transaction() as session:
        key = create_key(session, tenant, admin=admin, label=label)
        tenant_id = session.scalar(select(ApiKey.tenant_id).where(ApiKey.secret_hash == key_hash(key)))
    assert tenant_id is not None
    return TestKey(key, tenant, tenant_id, admin)


def key_of(app: Flask) -> TestKey:
    """The key ``app.test_client()`` sends (made by the ``make_app`` fixture)."""
    key: TestKey = app.config[TEST_KEY]
    return key


def app_key(app: Flask, tenant: str, admin: bool = False) -> TestKey:
    """Another key, of ``tenant``, in ``app``'s database."""
    storage: Storage = app.extensions[EXTENSION].storage
    return add_key(storage, tenant, admin=admin)


class KeyClient(FlaskClient):
    """The test client of the fixtures' apps: it sends the app's key as ``Authorization: Bearer``.

    ``app.test_client()`` (``key=True``) sends the app's key, ``app.test_client(key=other)`` another
    (a :class:`TestKey` or the key itself), ``app.test_client(key=None)`` none at all.
    """

    def __init__(self, *args: Any, key: TestKey | str | bool | None = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if key is True:
            key = self.application.config.get(TEST_KEY)
        if isinstance(key, TestKey):
            key = key.key
        if isinstance(key, str):
            self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"


def multipart(files: Iterable[tuple[str, bytes]], **form: str) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with form fields and ``image`` files, and its Content-Type.

    Built in memory: given the files as a dict, Werkzeug's test client spills a body over
    500 KiB to an anonymous temp file that it never closes (a ResourceWarning later).
    """
    images = [("image", FileStorage(io.BytesIO(content), filename=name)) for name, content in files]
    boundary, body = encode_multipart(MultiDict([*form.items(), *images]))
    return body, f'multipart/form-data; boundary="{boundary}"'


def post_images(client: FlaskClient, *files: tuple[str, bytes], **form: str) -> TestResponse:
    """POST /api/v1/jobs in-process with ``(filename, bytes)`` files and form fields."""
    body, content_type = multipart(files, **form)
    return client.post("/api/v1/jobs", data=body, content_type=content_type)


def submit(app: Flask, images: list[bytes], **form: str) -> str:
    """Create a job in-process (asserting the 202); return its id."""
    response = post_images(app.test_client(), *((f"img-{i}.png", data) for i, data in enumerate(images)), **form)
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["job_id"]


def post_job(api: requests.Session, api_url: str, files: list[tuple[str, bytes]], **form: str) -> requests.Response:
    """POST /api/v1/jobs to a running API with ``api``'s key, every part typed ``application/octet-stream``
    (the API sniffs)."""
    multipart = [("image", (name, data, "application/octet-stream")) for name, data in files]
    return api.post(f"{api_url}/api/v1/jobs", files=multipart, data=form, timeout=30)


def new_upload(blobs: BlobStore, data: bytes, filename: str) -> NewUpload:
    """An upload as the API receives it: the bytes streamed to a temp file on the volume, then identified."""
    incoming = blobs.new_incoming()
    incoming.write(data)
    return NewUpload(incoming, filename, identify_image(incoming))


def create_queued_job(
    storage: Storage,
    *images: bytes,
    params: JobParams | None = None,
    tenant_id: uuid.UUID | None = None,
    callback_url: str | None = None,
) -> uuid.UUID:
    """Create a queued job of ``tenant_id`` (default: none, as before owners) over ``images`` through the
    lifecycle, the way the API does (its task is not sent); return its id."""
    uploads = [new_upload(storage.blobs, data, f"img-{position}.png") for position, data in enumerate(images)]
    params = params or JobParams(model="default")
    with storage.database.transaction() as session:
        return create_job(session, storage.blobs, params, uploads, tenant_id, callback_url).id


def no_detections(upload: Upload) -> FileResult:
    return FileResult(upload.id, upload.file.width, upload.file.height, [])


def complete_job(
    storage: Storage, job_id: str | uuid.UUID, result_of: Callable[[Upload], FileResult] = no_detections
) -> Job:
    """Run one attempt of the job to ``succeeded`` as a worker would, with ``result_of(upload)`` for each upload."""
    uploads = job_state(storage, job_id).uploads
    with storage.database.transaction() as session:
        run = begin_attempt(session, uuid.UUID(str(job_id)), LEASE)
        assert run is not None, f"job {job_id} cannot begin an attempt"
        results = [result_of(u) for u in uploads]
        ended = finish_jobs(session, [Finishing(run.job_id, run.lease_token, results)])
        assert ended == {run.job_id}, f"job {job_id} did not finish"
    return job_state(storage, job_id)


def job_state(storage: Storage, job_id: str | uuid.UUID) -> Job:
    """The job as the database has it now, with its uploads, files and results."""
    with storage.database.transaction() as session:
        job = find_job(session, uuid.UUID(str(job_id)), None)
    assert job is not None, f"no job {job_id}"
    return job


def finished_job(storage: Storage, job_id: str | uuid.UUID) -> Job | None:
    """The job once it has finished, else None (for ``wait_until``)."""
    job = job_state(storage, job_id)
    return job if job.is_finished else None


def wait_for_finished(storage: Storage, job_id: str | uuid.UUID, timeout: float = 120) -> Job:
    return wait_until(lambda: finished_job(storage, job_id), timeout, what=f"job {job_id} to finish")


__all__ = [
    "LEASE",
    "TEST_KEY",
    "TEST_TENANT",
    "KeyClient",
    "TestKey",
    "add_key",
    "app_key",
    "complete_job",
    "create_queued_job",
    "finished_job",
    "job_state",
    "key_of",
    "new_upload",
    "no_detections",
    "post_images",
    "post_job",
    "submit",
    "wait_for_finished",
    "wait_for_job",
]

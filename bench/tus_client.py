"""tuspy, the tus project's Python client, as the resumable-upload benchmarks drive it, counting what it sends.

A benchmark's figures are only as honest as the client: this is the stock ``tusclient`` with its
file-backed URL store (``FileStorage``, what a resuming client keeps between runs), sending one
PATCH of :data:`CHUNK_BYTES` at a time without retries, so the bytes it sent are the sum of the
PATCH bodies, counted here as each is sent.

``python -m bench.tus_client FILE ENDPOINT STATE`` (the key in ``YOLO_JOBS_API_KEY``) is the client
``bench.resumable`` kills: it prints the upload's URL once created, then sends the file.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tusclient.client import TusClient
from tusclient.storage.filestorage import FileStorage
from tusclient.uploader import Uploader

CHUNK_BYTES = 64 * 1024 * 1024
TUS_HEADERS = {"Tus-Resumable": "1.0.0"}


@dataclass(frozen=True)
class Sent:
    """What one client run sent: where it started (the server's offset), the PATCH body bytes, how long."""

    url: str
    start_offset: int
    body_bytes: int
    seconds: float


def uploader(path: Path, endpoint: str, key: str, state: Path | None = None) -> Uploader:
    """A tuspy uploader of ``path`` to ``endpoint``; with ``state``, resuming the upload that file remembers."""
    client = TusClient(endpoint, headers={"Authorization": f"Bearer {key}"})
    stored = {"store_url": True, "url_storage": FileStorage(str(state))} if state else {}
    metadata = {"filename": path.name, "filetype": "application/octet-stream"}
    return client.uploader(str(path), chunk_size=CHUNK_BYTES, metadata=metadata, **stored)


def create(upload: Uploader) -> str:
    """Create the upload on the server (POST) unless the client resumes one; its URL."""
    if not upload.url:
        upload.set_url(upload.create_url())
        upload.offset = 0
    return upload.url


def send(upload: Uploader) -> Sent:
    """Send the rest of the file from the server's offset, a PATCH a chunk, counting each body as it goes."""
    started = time.perf_counter()
    url = create(upload)
    start_offset, body_bytes = upload.offset, 0
    while upload.offset < upload.stop_at:
        body_bytes += upload.get_request_length()
        upload.upload_chunk()
    return Sent(url, start_offset, body_bytes, time.perf_counter() - started)


def main(path: str, endpoint: str, state: str) -> None:
    upload = uploader(Path(path), endpoint, os.environ["YOLO_JOBS_API_KEY"], Path(state))
    print(create(upload), flush=True)
    send(upload)


if __name__ == "__main__":
    main(*sys.argv[1:])

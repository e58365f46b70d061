"""Files of any size sent by tus 1.0 to ``/api/v1/uploads``, resumable after Ctrl-C or a dropped connection.

The protocol is tuspy's; this module adds what tuspy leaves to its caller:

- a state file (tuspy's ``FileStorage``) that keeps each unfinished upload's URL between runs, under a
  fingerprint of this server, this key, the upload's purpose and this version of the file (size, modification
  time, first 64 KiB), so a run never resumes an upload of another file, tenant or server, nor sends model
  weights into an upload made for media (tuspy's own fingerprint is the first 64 KiB and the size only); a
  finished upload leaves the file, so it stays small;
- the upload's ``purpose`` in its metadata when it has one: ``weights``, model weights an admin key sends to
  register a model (the server takes nothing but images and videos otherwise);
- chunks (64 MiB by default): one PATCH is never the whole file, and a chunk is what memory holds;
- optionally each chunk's SHA-1 (the Checksum extension): the server keeps a chunk only if it matches;
- the client's retry rules (:mod:`yolo_jobs_client.transport`): a lost connection, a busy upload (423), an
  offset the server disagrees with (409) or a 502/503/504 resumes from the server's offset after a pause;
- the server's errors as :class:`ClientError`, and the stored file the finished upload became.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import requests
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError
from tusclient.fingerprint.interface import Fingerprint
from tusclient.storage.filestorage import FileStorage
from tusclient.uploader import Uploader

from yolo_jobs_client.batches import content_type
from yolo_jobs_client.errors import ClientError, Unavailable, UsageError, error_of
from yolo_jobs_client.transport import RETRY_STATUSES, UNACTED_STATUSES, Transport, backoff, never_sent
from yolo_jobs_client.uploads import CHUNK_BYTES, FileProgress, UploadedFile

UPLOADS_PATH = "/api/v1/uploads"
PIECE_TYPE = "application/offset+octet-stream"
HEAD_BYTES = 64 * 2**10
# A PATCH that failed with these is sent again from the server's offset: 409 the offset moved (a lost answer),
# 423 another request holds the upload, 460 the chunk did not match its checksum (damaged on the way).
PATCH_RETRY_STATUSES = RETRY_STATUSES | {409, 423, 460}
STALE_STATUSES = frozenset({404, 410})  # a stored upload the server no longer has (expired, deleted): start over

T = TypeVar("T")


class HeldOpen(io.BufferedReader):
    """The file being sent, opened once for the whole upload: tuspy reads every chunk from it instead of
    opening the path anew for each (and leaving those to the garbage collector), and its ``with`` around the
    fingerprint does not close it; :meth:`close` does."""

    def __exit__(self, *exc_info: object) -> None:
        pass


class VersionFingerprint(Fingerprint):
    """One version of a file, sent to one server under one key for one purpose: a changed file, another tenant,
    another server or another purpose never resumes a stored upload. The key itself is never written (only a
    digest of it)."""

    def __init__(self, base_url: str, api_key: str, purpose: str | None = None) -> None:
        scoped = f"{base_url}\n{api_key}" + (f"\n{purpose}" if purpose else "")  # a media upload's as before
        self.scope = hashlib.sha256(scoped.encode()).hexdigest()[:16]

    def get_fingerprint(self, fs: IO[bytes]) -> str:
        stat = os.fstat(fs.fileno())
        head = hashlib.md5(fs.read(HEAD_BYTES), usedforsecurity=False).hexdigest()
        return f"scope:{self.scope}--size:{stat.st_size}--mtime:{stat.st_mtime_ns}--md5:{head}"


@contextmanager
def open_state(path: Path) -> Iterator[FileStorage]:
    """The state file at ``path`` (made with its folder if missing), refused with a way out when damaged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = FileStorage(str(path))
    try:
        try:
            storage.get_item("")
        except ValueError as exc:
            raise UsageError(
                f"The upload state file {path} is damaged ({exc}): remove it (unfinished uploads then start over)."
            ) from exc
        yield storage
    finally:
        storage.close()


def tus_error(exc: TusCommunicationError, method: str, url: str | None) -> ClientError:
    """The :class:`ClientError` a tuspy failure stands for: the server's error answer, or no connection."""
    if exc.status_code is None:
        return Unavailable(f"Cannot reach {url}: {exc}")
    content = exc.response_content if isinstance(exc.response_content, bytes) else b""
    return error_of(exc.status_code, content, f"HTTP {exc.status_code} from {method} {url}")


def _cause(exc: TusCommunicationError) -> requests.RequestException | None:
    """The ``requests`` failure tuspy wrapped, if that is what happened."""
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, requests.RequestException) else None


class ResumableUpload:
    """Sends files to ``transport``'s API by tus, keeping unfinished uploads' URLs in ``state``; ``purpose``:
    what the files are when not images or videos (``weights``)."""

    def __init__(
        self,
        transport: Transport,
        state: FileStorage,
        chunk_bytes: int = CHUNK_BYTES,
        checksum: bool = False,
        purpose: str | None = None,
    ) -> None:
        if chunk_bytes < 1:
            raise UsageError("The chunk size must be at least one byte.")
        self.transport = transport
        self.state = state
        self.chunk_bytes = chunk_bytes
        self.checksum = checksum
        self.purpose = purpose
        headers = transport.session.headers
        self.tus = TusClient(
            transport.base_url + UPLOADS_PATH,
            headers={name: str(headers[name]) for name in ("Authorization", "User-Agent")},
        )
        self.fingerprinter = VersionFingerprint(transport.base_url, str(headers["Authorization"]), purpose)

    def _retrying(self, method: str, action: Callable[[int], T], transient: frozenset[int], url: str | None) -> T:
        """``action(attempt)`` until it succeeds, again after a pause while it fails with ``transient``
        statuses or a lost connection (for a creation: only one never made), ``transport.attempts`` times."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return action(attempt)
            except TusCommunicationError as exc:
                cause = _cause(exc)
                if exc.status_code is None:
                    again = method != "POST" or (cause is not None and never_sent(cause))
                else:
                    again = exc.status_code in transient
                if attempt >= self.transport.attempts or not again:
                    raise tus_error(exc, method, url) from exc
                time.sleep(backoff(attempt))

    def _uploader(self, path: Path, stream: HeldOpen) -> Uploader:
        """tuspy's uploader of ``path`` (read from ``stream``), at the offset the server holds when the state
        file names its upload."""
        kind = content_type(path)
        purpose = {"purpose": self.purpose} if self.purpose else {}
        options: dict[str, Any] = {
            "file_stream": stream,
            "chunk_size": self.chunk_bytes,
            "metadata": {"filename": path.name} | ({"filetype": kind} if kind else {}) | purpose,
            "store_url": True,
            "url_storage": self.state,
            "fingerprinter": self.fingerprinter,
            "upload_checksum": self.checksum,
        }

        def attach(attempt: int) -> Uploader:
            try:
                return self.tus.uploader(**options)  # a stored URL: HEAD for its offset
            except TusCommunicationError as exc:
                if exc.status_code not in STALE_STATUSES:
                    raise
                self.state.remove_item(self.fingerprint(stream))
                return self.tus.uploader(**options)

        return self._retrying("HEAD", attach, RETRY_STATUSES, self.state.get_item(self.fingerprint(stream)))

    def _finish(self, upload_id: str, size: int) -> None:
        """Send the empty piece at ``size`` that makes the server store an upload whose bytes it all holds."""
        headers = {"Tus-Resumable": "1.0.0", "Upload-Offset": str(size)}
        self.transport.request("PATCH", f"{UPLOADS_PATH}/{upload_id}", headers=headers, body=lambda: (b"", PIECE_TYPE))

    def fingerprint(self, stream: HeldOpen) -> str:
        stream.seek(0)
        return str(self.fingerprinter.get_fingerprint(stream))

    def send(self, path: Path, on_progress: FileProgress | None = None) -> UploadedFile:
        """Send ``path`` (resuming the upload the state file names for it), and return the stored file."""
        if not path.is_file():
            raise UsageError(f"{path}: no such file.")
        try:
            stream = HeldOpen(io.FileIO(path, "rb"))
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}.") from exc
        try:
            return self._send(path, stream, on_progress)
        finally:
            stream.close()

    def _send(self, path: Path, stream: HeldOpen, on_progress: FileProgress | None) -> UploadedFile:
        size = os.fstat(stream.fileno()).st_size
        uploader = self._uploader(path, stream)
        resumed_at = uploader.offset  # 0 without a stored upload
        if not uploader.url:
            created = self._retrying("POST", lambda attempt: uploader.create_url(), UNACTED_STATUSES, self.tus.url)
            uploader.set_url(created)  # in the state file before any byte is sent
            uploader.offset = 0

        def next_chunk(attempt: int) -> None:
            if attempt > 1:  # what the server holds after a failure
                uploader.offset = uploader.get_offset()
            if uploader.offset < size:
                uploader.upload_chunk()

        while True:
            if on_progress is not None:
                on_progress(uploader.offset, size)
            if uploader.offset >= size:
                break
            self._retrying("PATCH", next_chunk, PATCH_RETRY_STATUSES, uploader.url)
        upload_id = str(uploader.url).rstrip("/").rsplit("/", 1)[-1]
        answer = self.transport.request("GET", f"{UPLOADS_PATH}/{upload_id}").json()
        if not answer.get("file_id"):  # all bytes held, but the server stopped before storing them: an empty
            self._finish(upload_id, size)  # PATCH at the end has it store them (the protocol's own recovery)
            answer = self.transport.request("GET", f"{UPLOADS_PATH}/{upload_id}").json()
        if not answer.get("file_id"):
            raise Unavailable(f"Upload {upload_id} holds all {size} bytes but the server made no file of it.")
        self.state.remove_item(self.fingerprint(stream))
        return UploadedFile(
            path, str(answer["file_id"]), str(answer["sha256"]), int(answer["size"]), upload_id, resumed_at
        )

"""Content-addressed blobs on the shared volume (``blobs/ab/cd/<sha256>``).

Uploads stream into a temp file under ``tmp/`` on the same volume while being
hashed, then are fsynced and renamed atomically into place; a finished resumable
upload's part (``storage/parts.py``) is hard-linked into place instead. A client's filename
never becomes part of a path.

On a full volume every write may fail, closing included (the buffered tail is
flushed then): a temp file is still removed, and the readiness probe's file too,
whatever fails. Anything a crash leaves under ``tmp/`` has a known prefix
(:data:`UPLOAD_PREFIX`, :data:`PROBE_PREFIX`) for the retention cleanup to remove.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import IO, BinaryIO

TEMP_SUFFIX = ".part"
UPLOAD_PREFIX = "upload-"
PROBE_PREFIX = "probe-"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(value: str) -> bool:
    """Whether ``value`` is a lowercase hex SHA-256 digest."""
    return bool(_SHA256.match(value))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file's content, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def blob_relpath(sha256: str) -> str:
    """The storage-relative path of the blob with this digest."""
    if not is_sha256(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"


class IncomingFile:
    """A temp file on the volume that hashes and counts what is written to it.

    Werkzeug's form parser writes each uploaded part here (the API's request class
    hands it one per file part, ``app/uploads.py``), so no upload is ever held in
    memory whole.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO = open(path, "xb+")  # noqa: SIM115 - lives as long as the request
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._file.write(data)

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._file.flush()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        self._file.close()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def sync(self) -> None:
        """Flush and fsync the bytes written so far."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def discard(self) -> None:
        """Close and remove the temp file (no-op if already moved or removed), even when closing fails.

        Closing flushes the buffered tail, which raises ENOSPC again on a full volume;
        the file is closed all the same and those bytes are not wanted.
        """
        with contextlib.suppress(OSError):
            self.close()
        self.path.unlink(missing_ok=True)


class BlobStore:
    """Blobs and upload temp files under one storage root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.blobs_dir = self.root / "blobs"

    def ensure_layout(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.blobs_dir.mkdir(parents=True, exist_ok=True)

    def new_incoming(self) -> IncomingFile:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return IncomingFile(self.tmp_dir / f"{UPLOAD_PREFIX}{uuid.uuid4().hex}{TEMP_SUFFIX}")

    def path_of(self, relpath: str) -> Path:
        return self.root / relpath

    def install(self, incoming: IncomingFile) -> str:
        """fsync the temp file, move it atomically to its content address, return that relative path.

        The file is on the same volume (``tmp/``), so this is a rename, not a copy. When
        this returns, the bytes and the name are on disk (the file, its directory, and
        any directory made for it, each fsynced), before the caller commits the row.
        """
        relpath = blob_relpath(incoming.sha256)
        target = self.path_of(relpath)
        make_dirs_durably(target.parent)
        incoming.sync()
        incoming.close()
        os.replace(incoming.path, target)
        fsync_dir(target.parent)
        return relpath

    def link_into_place(self, source: Path, sha256: str) -> str:
        """Give the fsynced file ``source`` (a finished resumable upload's part) its content address; return it.

        A hard link, not a move: ``source`` keeps its name until the caller committed the
        row and removes it, so a crash before the commit loses nothing. The link is made
        under ``tmp/`` and renamed over the address atomically (a leftover blob there is
        replaced); a crash between the two leaves a temp file the retention cleanup removes.
        """
        relpath = blob_relpath(sha256)
        target = self.path_of(relpath)
        make_dirs_durably(target.parent)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        staged = self.tmp_dir / f"{UPLOAD_PREFIX}{uuid.uuid4().hex}{TEMP_SUFFIX}"
        os.link(source, staged)
        try:
            # The link shares the part's inode, perhaps hours old: touched, so the cleanup's removal of stale
            # temp files (by age, without a lock) leaves it alone until it is renamed.
            os.utime(staged)
            os.replace(staged, target)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        fsync_dir(target.parent)
        return relpath

    def open(self, relpath: str) -> IO[bytes]:
        return open(self.path_of(relpath), "rb")

    def exists(self, relpath: str) -> bool:
        return self.path_of(relpath).is_file()

    def delete(self, relpath: str) -> int:
        """Remove a blob; return the bytes freed (0 if it was already gone)."""
        path = self.path_of(relpath)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def is_writable(self) -> bool:
        """Whether a file can be written and removed under the storage root; leaves no file behind."""
        probe = self.tmp_dir / f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            return True
        except OSError:
            return False
        finally:
            # Should even this fail, the cleanup removes stale probe files (storage.maintenance.reclaim).
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)


def make_dirs_durably(directory: Path) -> None:
    """Make ``directory`` and any missing parent, fsyncing the parent of each one made."""
    if directory.is_dir():
        return
    make_dirs_durably(directory.parent)
    with contextlib.suppress(FileExistsError):  # made by another request meanwhile: fsynced all the same
        directory.mkdir()
    fsync_dir(directory.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

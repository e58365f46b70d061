"""Part files: the bytes of an unfinished resumable upload, on the shared volume under ``parts/<upload id hex>``.

Any API replica may take an upload's next piece, so its bytes live on the volume the
blobs are on, never in a process. A part is appended to in place; what counts of it
is what the upload's row says was made durable (``resumable_uploads.received``): a
writer first cuts the file back to that length, so a tail written but never recorded
(a crash, a refused checksum, a full volume) is discarded, never mistaken for data.

Parts have a folder of their own, not ``tmp/``, whose leftovers the retention cleanup
removes by name and age: a part is kept for as long as its upload may resume. When an
upload is whole, :meth:`storage.blobs.BlobStore.link_into_place` gives the part's
inode its content address (a hard link on the same volume, no copy), and the part's
own name goes after the stored file's row is committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.blobs import fsync_dir, make_dirs_durably

PARTS_DIR = "parts"
# Bytes read at once when a part is hashed from disk.
HASH_CHUNK_BYTES = 1024 * 1024
# A writer has the kernel start writing its bytes back to disk every this many (PartWriter._start_writeback).
WRITEBACK_BYTES = 8 * 1024 * 1024


def part_relpath(upload_id: uuid.UUID) -> str:
    """The storage-relative path of an upload's part (its id, never a client's filename)."""
    return f"{PARTS_DIR}/{upload_id.hex}"


@dataclass(frozen=True)
class StoredPart:
    """A part file found on disk: the upload it belongs to (by its name), its size and last write."""

    upload_id: uuid.UUID
    path: Path
    size: int
    mtime: float


class PartWriter:
    """Appends to one part at a known offset; :meth:`sync` makes what was written durable (``synced``).

    Writes go straight to the file descriptor (no buffer in this process), so a failed
    write (ENOSPC) fails at once and nothing is held back to be flushed later.
    """

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(self._fd, offset)  # an unrecorded tail is not data
            os.lseek(self._fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(self._fd)
            raise
        self.offset = self.synced = self._written_back = offset

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self.offset += written
        if self.offset - self._written_back >= WRITEBACK_BYTES:
            self._start_writeback()

    def _start_writeback(self) -> None:
        """Have the kernel start writing what was written since the last call, and not keep it cached.

        On Linux ``POSIX_FADV_DONTNEED`` starts the writeback of the range's dirty pages without waiting for
        it, so the disk writes while the next bytes arrive and :meth:`sync` finds little left to do (about
        3x the rate of appends fsynced every 64 MiB without it, on this project's CI disk); the pages are
        dropped once written, so a multi-GB upload does not push the volume's other files out of the cache.
        """
        os.posix_fadvise(self._fd, self._written_back, self.offset - self._written_back, os.POSIX_FADV_DONTNEED)
        self._written_back = self.offset

    def sync(self) -> None:
        os.fsync(self._fd)
        self.synced = self.offset

    def discard_unsynced(self) -> None:
        """Cut the part back to what was last made durable (best effort: the next writer cuts it anyway)."""
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self.synced)
            os.lseek(self._fd, self.synced, os.SEEK_SET)
            self.offset = self._written_back = self.synced

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class PartStore:
    """The part files under one storage root (``<root>/parts``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.directory = self.root / PARTS_DIR

    def path_of(self, relpath: str) -> Path:
        return self.root / relpath

    def create(self, upload_id: uuid.UUID) -> str:
        """Make the upload's empty part durably (the file and its name); return its relative path."""
        relpath = part_relpath(upload_id)
        path = self.path_of(relpath)
        make_dirs_durably(self.directory)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.directory)
        return relpath

    def writer(self, relpath: str, offset: int) -> PartWriter:
        """A writer at ``offset``, the part cut back to it first. FileNotFoundError if the part is gone."""
        return PartWriter(self.path_of(relpath), offset)

    def sha256(self, relpath: str, length: int) -> hashlib._Hash:
        """The running SHA-256 of the part's first ``length`` bytes, read from disk in chunks."""
        digest = hashlib.sha256()
        remaining = length
        with open(self.path_of(relpath), "rb", buffering=0) as handle:
            buffer = bytearray(HASH_CHUNK_BYTES)
            while remaining > 0:
                read = handle.readinto(memoryview(buffer)[: min(remaining, HASH_CHUNK_BYTES)])
                if not read:
                    raise ValueError(f"part {relpath} holds fewer than {length} bytes")
                digest.update(memoryview(buffer)[:read])
                remaining -= read
        return digest

    def remove(self, relpath: str) -> bool:
        """Remove a part (no-op if it is gone already); whether it was there."""
        try:
            self.path_of(relpath).unlink()
        except FileNotFoundError:
            return False
        return True

    def scan(self) -> Iterator[StoredPart]:
        """Every part on disk whose name is an upload id (anything else in the folder is not a part)."""
        if not self.directory.is_dir():
            return
        with os.scandir(self.directory) as entries:
            for entry in entries:
                try:
                    upload_id = uuid.UUID(hex=entry.name)
                except ValueError:
                    continue
                if entry.name != upload_id.hex:
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield StoredPart(upload_id, Path(entry.path), stat.st_size, stat.st_mtime)

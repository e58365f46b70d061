"""The SHA-256 of each upload this process is receiving, kept where the last piece ended.

An upload's next PATCH usually comes back to the same process (one client, one
connection kept alive), which then hashes its bytes as they arrive and never reads
the part again. When another replica took the previous piece, or this process
restarted, the running hash is not here: the pieces are written without it, and the
upload's finishing step hashes the part from disk once (never once per PATCH).
A sha256 object is a few hundred bytes; at most :data:`MAX_RUNNING` are kept, the
least recently used dropped first, so memory is bounded whatever the traffic.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict

MAX_RUNNING = 1024


class RunningHashes:
    """Per process: upload id -> (offset, the SHA-256 of the upload's bytes up to that offset)."""

    def __init__(self, capacity: int = MAX_RUNNING) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[uuid.UUID, tuple[int, hashlib._Hash]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, upload_id: uuid.UUID, offset: int) -> hashlib._Hash | None:
        """The running hash of the upload at exactly ``offset`` (removed from the cache), else None."""
        with self._lock:
            entry = self._entries.pop(upload_id, None)
        if entry is None or entry[0] != offset:
            return hashlib.sha256() if offset == 0 else None
        return entry[1]

    def keep(self, upload_id: uuid.UUID, offset: int, running: hashlib._Hash) -> None:
        """Remember the upload's hash at ``offset`` (the caller must not update ``running`` any more)."""
        with self._lock:
            self._entries[upload_id] = (offset, running)
            self._entries.move_to_end(upload_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def drop(self, upload_id: uuid.UUID) -> None:
        with self._lock:
            self._entries.pop(upload_id, None)

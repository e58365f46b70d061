"""The per-process running hashes: given back only at the offset they were kept at, and bounded in number."""

from __future__ import annotations

import hashlib
import uuid

from resumable.hashes import RunningHashes


def test_a_running_hash_is_given_back_once_and_only_at_its_offset() -> None:
    hashes = RunningHashes()
    upload = uuid.uuid4()
    running = hashlib.sha256(b"abc")
    hashes.keep(upload, 3, running)
    assert hashes.take(upload, 4) is None, "another offset: another process wrote meanwhile"
    hashes.keep(upload, 3, running)
    assert hashes.take(upload, 3) is running
    assert hashes.take(upload, 3) is None, "taken: a second writer here would rebuild it"
    fresh = hashes.take(uuid.uuid4(), 0)
    assert fresh is not None and fresh.hexdigest() == hashlib.sha256(b"").hexdigest()


def test_the_least_recently_kept_go_first_past_the_capacity() -> None:
    hashes = RunningHashes(capacity=2)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for upload in (first, second, third):
        hashes.keep(upload, 1, hashlib.sha256(b"x"))
    assert hashes.take(first, 1) is None
    assert hashes.take(second, 1) is not None and hashes.take(third, 1) is not None

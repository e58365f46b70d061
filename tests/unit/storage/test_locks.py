"""Advisory locks: a digest an upload holds is skipped by maintenance, and one maintenance run at a time."""

from __future__ import annotations

import hashlib

from storage import Storage
from storage.locks import digest_lock_key, lock_digests, maintenance_lock, try_lock_digests

DIGESTS = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]


def test_digest_keys_are_signed_32_bit() -> None:
    assert digest_lock_key("ffffffff" + "0" * 56) == -1
    assert digest_lock_key("7fffffff" + "0" * 56) == 2**31 - 1


def test_maintenance_skips_a_digest_an_upload_holds(store: Storage) -> None:
    with store.database.transaction() as upload:
        lock_digests(upload, DIGESTS[:1])
        with store.database.transaction() as maintenance:
            assert try_lock_digests(maintenance, DIGESTS) == set(DIGESTS[1:])
    with store.database.transaction() as maintenance:  # the upload's transaction ended: its lock went with it
        assert try_lock_digests(maintenance, DIGESTS) == set(DIGESTS)
        assert try_lock_digests(maintenance, []) == set()


def test_one_maintenance_run_at_a_time(store: Storage) -> None:
    with maintenance_lock(store.database.engine) as first:
        assert first
        with maintenance_lock(store.database.engine) as second:
            assert not second
    with maintenance_lock(store.database.engine) as again:
        assert again

"""PostgreSQL advisory locks that serialise work on one digest, or one job across the cluster."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, INTEGER
from sqlalchemy.orm import Session

# Namespace of the two-key advisory locks taken per sha256 ("YJ").
DIGEST_LOCK_NAMESPACE = 0x594A
# Single-key (bigint) advisory lock held by the one storage maintenance run allowed at a time ("YJ-CLEAN").
MAINTENANCE_LOCK_KEY = 0x594A_2D43_4C45_414E

# Ordered in a subquery, so the locks are taken in key order whatever the plan: two uploads never deadlock.
_LOCK_KEYS = text(
    "SELECT count(pg_advisory_xact_lock(:ns, key)) FROM (SELECT key FROM unnest(:keys) AS key ORDER BY key) AS k"
).bindparams(bindparam("keys", type_=ARRAY(INTEGER)))
_TRY_LOCK_KEYS = text("SELECT key FROM unnest(:keys) AS key WHERE pg_try_advisory_xact_lock(:ns, key)").bindparams(
    bindparam("keys", type_=ARRAY(INTEGER))
)


def digest_lock_key(sha256: str) -> int:
    """A signed 32-bit key derived from a hex digest."""
    value = int(sha256[:8], 16)
    return value - (1 << 32) if value >= (1 << 31) else value


def lock_digests(session: Session, digests: Iterable[str]) -> None:
    """Take the transaction-scoped lock of each digest, in a fixed order so two uploads never deadlock: one
    statement however many (a job of 10,000 files)."""
    keys = sorted({digest_lock_key(d) for d in digests})
    if keys:
        session.execute(_LOCK_KEYS, {"ns": DIGEST_LOCK_NAMESPACE, "keys": keys})


def try_lock_digests(session: Session, digests: Iterable[str]) -> set[str]:
    """Take, without waiting, the transaction-scoped lock of each digest; return the digests now locked.

    A digest whose lock another transaction holds (an upload in progress) is left out,
    so maintenance never blocks an upload and never deadlocks with one.
    """
    by_key: dict[int, list[str]] = {}
    for digest in set(digests):
        by_key.setdefault(digest_lock_key(digest), []).append(digest)
    if not by_key:
        return set()
    params = {"ns": DIGEST_LOCK_NAMESPACE, "keys": sorted(by_key)}
    locked = session.scalars(_TRY_LOCK_KEYS, params)
    return {digest for key in locked for digest in by_key[key]}


@contextmanager
def maintenance_lock(engine: Engine) -> Iterator[bool]:
    """Try to become the one maintenance run of the cluster; yields whether this process is it.

    A session-level lock on a connection of its own (autocommit, so no transaction
    stays open): it is released on exit, or by PostgreSQL when the process dies.
    """
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        acquired = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": MAINTENANCE_LOCK_KEY}))
        try:
            yield acquired
        finally:
            if acquired:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MAINTENANCE_LOCK_KEY})

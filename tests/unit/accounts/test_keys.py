"""API keys against real PostgreSQL: made once and shown once, stored as a hash, found, listed and revoked."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select, text

from accounts.keys import (
    Principal,
    create_key,
    ensure_tenant,
    find_principal,
    is_well_formed,
    key_hash,
    list_keys,
    new_key,
    note_used,
    principal_of_key_id,
    revoke_key,
)
from storage import Storage
from storage.tables import ApiKey, Tenant


def make(store: Storage, tenant: str = "alice", admin: bool = False, label: str | None = None) -> str:
    with store.database.transaction() as session:
        return create_key(session, tenant, admin=admin, label=label)


def principal(store: Storage, key: str) -> Principal | None:
    with store.database.transaction() as session:
        return find_principal(session, key)


def test_keys_are_random_well_formed_and_stored_only_as_a_hash(store: Storage) -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100 and all(is_well_formed(k) for k in keys)
    key = make(store, label="laptop")
    _, prefix, secret = key.split("_", 2)
    assert len(secret) == 43  # 256 random bits, URL-safe base64
    with store.database.transaction() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one()
        stored = " ".join(str(v) for v in session.execute(text("SELECT * FROM api_keys")).one())
    assert row.secret_hash == key_hash(key) and secret not in stored and key not in stored
    assert (row.admin, row.label, row.revoked_at, row.last_used_at) == (False, "laptop", None, None)


def test_a_live_key_is_its_tenants_principal(store: Storage) -> None:
    key, admin = make(store, "alice"), make(store, "ops", admin=True)
    found = principal(store, key)
    with store.database.transaction() as session:
        alice = session.scalars(select(Tenant).where(Tenant.name == "alice")).one()
        assert principal_of_key_id(session, found.key_id if found else uuid.uuid4()) == found
    assert found is not None and (found.tenant, found.tenant_id, found.admin) == ("alice", alice.id, False)
    assert found.key_prefix == key.split("_")[1]
    assert (admin_principal := principal(store, admin)) is not None and admin_principal.admin


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "not-a-key",
        "Bearer yj_00000000_" + "a" * 43,
        "yj_0000000_" + "a" * 43,  # a short prefix
        "yj_00000000_" + "a" * 42,  # a short secret
        "yj_00000000_" + "a" * 43,  # well formed, unknown
    ],
)
def test_malformed_and_unknown_keys_have_no_principal(store: Storage, presented: str) -> None:
    make(store)
    assert principal(store, presented) is None


def test_the_right_prefix_with_another_secret_has_no_principal(store: Storage) -> None:
    key = make(store)
    forged = key[:-1] + ("x" if key[-1] != "x" else "y")
    assert is_well_formed(forged) and principal(store, forged) is None


def test_a_revoked_key_has_no_principal_any_more(store: Storage) -> None:
    key = make(store)
    found = principal(store, key)
    assert found is not None
    prefix = key.split("_")[1]
    with store.database.transaction() as session:
        assert revoke_key(session, prefix)
    with store.database.transaction() as session:
        assert not revoke_key(session, prefix), "a revoked key cannot be revoked again"
        assert not revoke_key(session, "ffffffff")
        assert principal_of_key_id(session, found.key_id) is None, "a signed-in browser is signed out"
    assert principal(store, key) is None


def test_tenants_are_made_once_by_name(store: Storage) -> None:
    make(store, "alice")
    make(store, "alice", admin=True)
    with store.database.transaction() as session:
        again = ensure_tenant(session, "alice")
        assert session.scalar(select(func.count()).select_from(Tenant)) == 1
        assert session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.tenant_id == again.id)) == 2


def test_an_imported_key_must_be_well_formed(store: Storage) -> None:
    imported = new_key()
    with store.database.transaction() as session:
        assert create_key(session, "operators", admin=True, key=imported) == imported
        with pytest.raises(ValueError, match="yj_"):
            create_key(session, "operators", key="hunter2")
    assert (found := principal(store, imported)) is not None and found.admin


def test_last_used_is_written_at_most_once_a_minute(store: Storage) -> None:
    found = principal(store, make(store))
    assert found is not None

    def last_used() -> object:
        with store.database.transaction() as session:
            return session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == found.key_id))

    with store.database.transaction() as session:
        note_used(session, found.key_id)
    first = last_used()
    assert first is not None
    with store.database.transaction() as session:
        note_used(session, found.key_id)
    assert last_used() == first, "a second use within the minute writes nothing"
    with store.database.transaction() as session:
        session.execute(
            text("UPDATE api_keys SET last_used_at = now() - interval '2 minutes' WHERE id = :id"), {"id": found.key_id}
        )
        note_used(session, found.key_id)
    assert last_used() != first


def test_list_keys_shows_everything_but_the_key(store: Storage) -> None:
    first = make(store, "alice", label="laptop")
    second = make(store, "ops", admin=True)
    with store.database.transaction() as session:
        revoke_key(session, first.split("_")[1])
    with store.database.transaction() as session:
        listing = list_keys(session)
    assert [(k.prefix, k.tenant, k.admin, k.label) for k in listing] == [
        (first.split("_")[1], "alice", False, "laptop"),
        (second.split("_")[1], "ops", True, None),
    ]
    assert listing[0].revoked_at is not None and listing[1].revoked_at is None
    assert all(k.created_at is not None and k.last_used_at is None for k in listing)
    assert all(key.split("_", 2)[2] not in repr(listing) for key in (first, second))

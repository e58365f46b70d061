"""API keys: make one (shown once), find who a presented key belongs to, list and revoke them.

A key reads ``yj_<prefix>_<secret>``: the 8-hex-digit prefix names it in lists
and finds its row, the 43-character secret carries 256 random bits. Only the
SHA-256 of the whole key is stored; with that much entropy a slow hash adds
nothing, and the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from storage.tables import ApiKey, Tenant

KEY_PATTERN = re.compile(r"^yj_([0-9a-f]{8})_[A-Za-z0-9_-]{43}$")
# last_used_at is written at most this often per key, so authenticating costs no write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a key's tenant, and whether the key is an admin's."""

    tenant_id: uuid.UUID
    tenant: str
    admin: bool
    key_id: uuid.UUID
    key_prefix: str
    # Whether the lookup found the key's use unrecorded for LAST_USED_RESOLUTION: :func:`note_used` writes then.
    use_unrecorded: bool = field(default=True, compare=False)


@dataclass(frozen=True)
class KeyListing:
    prefix: str
    tenant: str
    admin: bool
    label: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key (256 bits of secret)."""
    return f"yj_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


def is_well_formed(key: str) -> bool:
    return bool(KEY_PATTERN.match(key))


def ensure_tenant(session: Session, name: str) -> Tenant:
    """The tenant called ``name``, created when missing."""
    session.execute(
        insert(Tenant).values(id=uuid.uuid4(), name=name).on_conflict_do_nothing(index_elements=[Tenant.name])
    )
    tenant = session.scalars(select(Tenant).where(Tenant.name == name)).one()
    return tenant


def create_key(
    session: Session, tenant_name: str, admin: bool = False, label: str | None = None, key: str | None = None
) -> str:
    """Store a key for ``tenant_name`` (created when missing) and return it: the only time it is seen.

    ``key`` imports a key made elsewhere (the OpenShift template's generated admin key).
    """
    key = key or new_key()
    match = KEY_PATTERN.match(key)
    if match is None:
        raise ValueError("a key must look like yj_<8 hex digits>_<43 url-safe characters>")
    tenant = ensure_tenant(session, tenant_name)
    session.add(
        ApiKey(
            id=uuid.uuid4(),
            tenant_id=tenant.id,
            prefix=match.group(1),
            secret_hash=key_hash(key),
            admin=admin,
            label=label,
        )
    )
    session.flush()
    return key


def _use_unrecorded() -> ColumnElement[bool]:
    """Whether a key's last use was recorded over :data:`LAST_USED_RESOLUTION` ago, or never."""
    return or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < func.now() - LAST_USED_RESOLUTION)


# Live (not revoked) keys as columns: the key's hash, then its Principal's fields. Built once: building
# the statement took more CPU than running it, and loading an ApiKey object more again.
_LIVE_KEYS = (
    select(ApiKey.secret_hash, ApiKey.tenant_id, Tenant.name, ApiKey.admin, ApiKey.id, ApiKey.prefix)
    .add_columns(_use_unrecorded())
    .join(Tenant, Tenant.id == ApiKey.tenant_id)
    .where(ApiKey.revoked_at.is_(None))
)
_LIVE_KEY_BY_PREFIX = _LIVE_KEYS.where(ApiKey.prefix == bindparam("prefix"))
_LIVE_KEY_BY_ID = _LIVE_KEYS.where(ApiKey.id == bindparam("key_id"))


def find_principal(session: Session, presented: str) -> Principal | None:
    """The principal of a live key, or None for a malformed, unknown or revoked one."""
    match = KEY_PATTERN.match(presented)
    if match is None:
        return None
    found = _key_and_principal(session, _LIVE_KEY_BY_PREFIX, {"prefix": match.group(1)})
    if found is None or not hmac.compare_digest(found[0], key_hash(presented)):
        return None
    return found[1]


def principal_of_key_id(session: Session, key_id: uuid.UUID) -> Principal | None:
    """The principal of a live key by its id (a signed-in browser session holds the id)."""
    found = _key_and_principal(session, _LIVE_KEY_BY_ID, {"key_id": key_id})
    return found[1] if found else None


def _key_and_principal(session: Session, query: Select[Any], params: dict[str, Any]) -> tuple[str, Principal] | None:
    """The key's hash and the principal it stands for, from one of the ``_LIVE_KEY_BY_*`` queries."""
    row = session.execute(query, params).first()
    if row is None:
        return None
    secret_hash, *principal = row
    return secret_hash, Principal(*principal)


def note_used(session: Session, key_id: uuid.UUID) -> None:
    """Record the key's use, at most once per :data:`LAST_USED_RESOLUTION`."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id, _use_unrecorded()).values(last_used_at=func.now()))


def list_keys(session: Session) -> list[KeyListing]:
    query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.created_at)
    return [
        KeyListing(k.prefix, tenant, k.admin, k.label, k.created_at, k.last_used_at, k.revoked_at)
        for k, tenant in session.execute(query)
    ]


def revoke_key(session: Session, prefix: str) -> bool:
    """Revoke the live key with this prefix; return whether there was one."""
    statement = update(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    return session.execute(statement.values(revoked_at=func.now()).returning(ApiKey.id)).first() is not None

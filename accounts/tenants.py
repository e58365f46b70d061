"""A tenant's account: its name and the secret that signs its webhooks, and rotating that secret.

The secret is made by the database (``schema.sql``'s default for ``tenants.webhook_secret``:
``whsec_`` and 32 random bytes in base64, as Standard Webhooks expects), for a new tenant
and on rotation alike, so there is one definition of what a secret is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import literal_column, select, update
from sqlalchemy.orm import Session

from storage.tables import Tenant


@dataclass(frozen=True)
class Account:
    """What ``GET /api/v1/account`` shows."""

    tenant: str
    webhook_secret: str


def find_account(session: Session, tenant_id: uuid.UUID) -> Account:
    tenant, secret = session.execute(select(Tenant.name, Tenant.webhook_secret).where(Tenant.id == tenant_id)).one()
    return Account(tenant, secret)


def rotate_webhook_secret(session: Session, tenant_id: uuid.UUID) -> Account:
    """Give the tenant a new webhook secret (the old one stops signing at once); the caller commits."""
    statement = (
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(webhook_secret=literal_column("DEFAULT"))
        .returning(Tenant.name, Tenant.webhook_secret)
    )
    tenant, secret = session.execute(statement).one()
    return Account(tenant, secret)

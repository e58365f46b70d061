"""/api/v1/account: the caller's tenant, its webhook signing secret and its storage usage; rotating that secret.

The secret verifies the ``webhook-signature`` of the ``job.finished`` webhooks (see
docs/clients.md, Webhooks). Rotation is a ``POST``, so it needs the ``Authorization`` header (a signed-in
browser can read the account, never change it); the new secret signs every attempt
from then on, retries of earlier deliveries included. ``storage`` is what the tenant's
live files take of ``QUOTA_STORAGE_BYTES`` and its unfinished resumable uploads of
``QUOTA_PENDING_UPLOAD_BYTES`` (:mod:`files.quota`).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

from flask import Response, jsonify
from sqlalchemy.orm import Session

from accounts.tenants import Account, find_account, rotate_webhook_secret
from app.api import bp
from app.api.schemas import Account as AccountBody
from app.auth import current_principal
from app.extensions import db_session, get_settings
from files.quota import storage_usage


def _account_json(session: Session, tenant_id: uuid.UUID, account: Account) -> dict[str, Any]:
    quotas = get_settings().files
    usage = storage_usage(session, tenant_id, quotas.storage_bytes, quotas.pending_upload_bytes)
    return {"tenant": account.tenant, "webhook_secret": account.webhook_secret, "storage": asdict(usage)}


@bp.get("/account", responses={200: AccountBody})
def show_account() -> Response:
    """The caller's tenant, its webhook signing secret, and its storage usage against its quotas."""
    session, tenant_id = db_session(), current_principal().tenant_id
    return jsonify(_account_json(session, tenant_id, find_account(session, tenant_id)))


@bp.post("/account/webhook-secret", responses={200: AccountBody})
def rotate_secret() -> Response:
    """A new webhook signing secret for the caller's tenant, in force at once."""
    session, tenant_id = db_session(), current_principal().tenant_id
    account = rotate_webhook_secret(session, tenant_id)
    session.commit()
    return jsonify(_account_json(session, tenant_id, account))

"""/api/v1/account: the caller's tenant and its webhook signing secret, and rotating that secret.

The secret verifies the ``webhook-signature`` of the ``job.finished`` webhooks (see
docs/clients.md, Webhooks). Rotation is a ``POST``, so it needs the ``Authorization`` header (a signed-in
browser can read the account, never change it); the new secret signs every attempt
from then on, retries of earlier deliveries included.
"""

from __future__ import annotations

from flask import Response, jsonify

from accounts.tenants import Account, find_account, rotate_webhook_secret
from app.api import bp
from app.api.schemas import Account as AccountBody
from app.auth import current_principal
from app.extensions import db_session


def _account_json(account: Account) -> dict[str, str]:
    return {"tenant": account.tenant, "webhook_secret": account.webhook_secret}


@bp.get("/account", responses={200: AccountBody})
def show_account() -> Response:
    """The caller's tenant and its webhook signing secret."""
    return jsonify(_account_json(find_account(db_session(), current_principal().tenant_id)))


@bp.post("/account/webhook-secret", responses={200: AccountBody})
def rotate_secret() -> Response:
    """A new webhook signing secret for the caller's tenant, in force at once."""
    session = db_session()
    account = rotate_webhook_secret(session, current_principal().tenant_id)
    session.commit()
    return jsonify(_account_json(account))

"""Who is asking: every request but the health probes, static files and the sign-in page needs a principal.

- The JSON API takes ``Authorization: Bearer <key>``. A missing, malformed, unknown
  or revoked key answers 401 with ``WWW-Authenticate: Bearer``.
- Browsers sign in with a key once (``app/web/account.py``); the signed session
  cookie (HttpOnly, SameSite=Lax, Secure over HTTPS) holds the key's id, checked
  against the database on every request, so revoking the key signs the browser out.
  The cookie also authenticates the API's *reads* (the job page polls the JSON),
  never its writes: a cross-site form can never spend a signed-in user's quota.
- ``/metrics`` is for admins only.
"""

from __future__ import annotations

import uuid

from flask import Flask, g, redirect, request, session, url_for
from werkzeug.wrappers import Response

from accounts.keys import Principal, find_principal, note_used, principal_of_key_id
from app.errors import ApiError
from app.extensions import db_session

SESSION_KEY = "key_id"
# The API's description is public too (app/openapi.py says why).
OPEN_ENDPOINTS = frozenset(
    {
        "static",
        "health.healthz",
        "health.readyz",
        "web.sign_in",
        "web.sign_in_form",
        "api.openapi_document",
        "docs.page",
        "docs.static",
    }
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


CHALLENGE = 'Bearer realm="yolo-jobs"'


def unauthorized(message: str) -> ApiError:
    """401 ``unauthorized``; every 401 carries the ``WWW-Authenticate`` challenge (:func:`_challenge`)."""
    return ApiError(401, "unauthorized", message)


def current_principal() -> Principal:
    """The principal of this request (set by :func:`_authenticate` before any view runs)."""
    return g.principal


def tenant_scope() -> uuid.UUID | None:
    """The tenant whose jobs and files this request may see; None for an admin (every tenant)."""
    principal = current_principal()
    return None if principal.admin else principal.tenant_id


def _bearer_principal() -> Principal | None:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "bearer" or not presented.strip():
        raise unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    principal = find_principal(db_session(), presented.strip())
    if principal is None:
        raise unauthorized("This API key is not valid, or was revoked.")
    return principal


def _session_principal() -> Principal | None:
    raw = session.get(SESSION_KEY)
    if not raw:
        return None
    try:
        key_id = uuid.UUID(raw)
    except ValueError:
        session.clear()
        return None
    principal = principal_of_key_id(db_session(), key_id)
    if principal is None:  # revoked meanwhile: sign the browser out
        session.clear()
    return principal


def _authenticate() -> Response | None:
    if request.endpoint in OPEN_ENDPOINTS or request.endpoint is None:
        return None  # unmatched URLs answer 404 without telling who may see what
    api = request.path.startswith("/api/") or request.path == "/metrics"
    principal = _bearer_principal()
    if principal is None and (not api or request.method in SAFE_METHODS):
        principal = _session_principal()
    if principal is None:
        if api:
            raise unauthorized("This API needs an API key: 'Authorization: Bearer <key>'.")
        return redirect(url_for("web.sign_in_form", next=request.full_path.rstrip("?")), 303)
    if request.path == "/metrics" and not principal.admin:
        raise ApiError(403, "forbidden", "Metrics are for admin keys only.")
    g.principal = principal
    note_used(db_session(), principal.key_id)
    db_session().commit()
    return None


def _challenge(response: Response) -> Response:
    if response.status_code == 401:
        response.headers.setdefault("WWW-Authenticate", CHALLENGE)
    return response


def init_app(app: Flask) -> None:
    app.before_request(_authenticate)
    app.after_request(_challenge)

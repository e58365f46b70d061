"""Who is asking: every request but the health probes, static files and the sign-in page needs a principal.

- The JSON API takes ``Authorization: Bearer <key>``. A missing, malformed, unknown
  or revoked key answers 401 with ``WWW-Authenticate: Bearer``.
- Browsers sign in with a key once (``app/web/account.py``); the signed session
  cookie (HttpOnly, SameSite=Lax, Secure over HTTPS) holds the key's id, checked
  against the database on every request, so revoking the key signs the browser out.
  The cookie also authenticates the API's *reads* (the job page polls the JSON),
  never its writes: a cross-site form can never spend a signed-in user's quota.
  The one exception is the web form's resumable upload (tus-js-client, under
  ``/api/v1/uploads``): its POST, PATCH and DELETE take the session when they
  carry the page's CSRF token in ``X-CSRFToken``, which a cross-site page cannot
  read. The token is a header, so nginx's key check (which sees no body) checks it too.
- ``/metrics`` is for admins only.
- nginx asks ``/_proxy/key-check`` (headers only) before it takes a request's body,
  and takes it only when the credentials are good for that method and path
  (``proxy/nginx.conf.in``); a client without a key never fills its temp files.
- An address with too many failed authentications is refused before its
  credentials are checked (:mod:`app.auth_throttle`).
"""

from __future__ import annotations

import uuid
from urllib.parse import unquote, urlsplit

from flask import Blueprint, Flask, Response, g, redirect, request, session, url_for
from flask_wtf.csrf import validate_csrf
from sqlalchemy.orm import Session
from wtforms import ValidationError

from accounts.keys import Principal, find_principal, note_used, principal_of_key_id
from app.errors import ApiError, error_response, to_api_error
from app.extensions import db_session
from app.metrics import AUTH_FAILURES
from config.api_paths import is_api_path

SESSION_KEY = "key_id"
KEY_CHECK_ENDPOINT = "auth.key_check"
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
        "api.tus_options",  # what the tus server speaks: the protocol's, no tenant's
        "api.signed_file_content",  # its URL's signature is its credential (app/api/signed_files.py)
        KEY_CHECK_ENDPOINT,
    }
)
# Open endpoints that check a key themselves: an address over its failure limit is refused them too.
KEY_CHECKING_ENDPOINTS = frozenset({"web.sign_in", KEY_CHECK_ENDPOINT})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Resumable uploads (app/api/tus.py): a signed-in browser's writes there carry the page's CSRF token.
UPLOADS_PATH = "/api/v1/uploads"
UPLOAD_METHODS = frozenset({"POST", "PATCH", "DELETE"})  # HEAD, its GET: reads
CSRF_HEADER = "X-CSRFToken"


CHALLENGE = 'Bearer realm="yolo-jobs"'

bp = Blueprint("auth", __name__)


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


def _lookup_session() -> Session:
    """The request's session for its key lookup, before its first transaction: in autocommit, so the SELECT
    (and the once-a-minute UPDATE of :func:`accounts.keys.note_used`) go without a BEGIN and a COMMIT.
    The commit that ends the lookup (:func:`_authenticate`) returns the session to transactions."""
    lookup = db_session()
    lookup.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return lookup


def _bearer_principal() -> Principal | None:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "bearer" or not presented.strip():
        raise unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    principal = find_principal(_lookup_session(), presented.strip())
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
    principal = principal_of_key_id(_lookup_session(), key_id)
    if principal is None:  # revoked meanwhile: sign the browser out
        session.clear()
    return principal


def checks_credentials() -> bool:
    """Whether this request's credentials are checked (every endpoint but the open ones, and the sign-in)."""
    endpoint = request.endpoint
    return endpoint is not None and (endpoint not in OPEN_ENDPOINTS or endpoint in KEY_CHECKING_ENDPOINTS)


def _session_counts(path: str, method: str) -> bool:
    """Whether the session cookie may stand for the request: on web pages, on the API's reads
    (:mod:`config.api_paths`), and on a resumable upload's writes that carry the page's CSRF token."""
    if not is_api_path(path) or method in SAFE_METHODS:
        return True
    is_upload = path == UPLOADS_PATH or path.startswith(f"{UPLOADS_PATH}/")
    return is_upload and method in UPLOAD_METHODS and _has_csrf_token()


def _has_csrf_token() -> bool:
    try:
        validate_csrf(request.headers.get(CSRF_HEADER))
    except ValidationError:
        return False
    return True


def _principal_for(path: str, method: str) -> Principal | None:
    """Who the credentials stand for on ``method path``: the bearer key, else the session where it counts."""
    principal = _bearer_principal()
    if principal is None and _session_counts(path, method):
        principal = _session_principal()
    return principal


def _refuse(path: str, full_path: str) -> Response:
    """No principal: 401 for the API (raised), the sign-in page (303) for the web pages."""
    if is_api_path(path):
        raise unauthorized("This API needs an API key: 'Authorization: Bearer <key>'.")
    return redirect(url_for("web.sign_in_form", next=full_path), 303)


def require_admin(principal: Principal, what: str) -> None:
    """403 ``forbidden`` unless ``principal`` holds an admin key: ``what`` it asked to do is for admins only."""
    if not principal.admin:
        raise ApiError(403, "forbidden", f"{what} is for admin keys only.")


def _authenticate() -> Response | None:
    if request.endpoint in OPEN_ENDPOINTS or request.endpoint is None:
        return None  # unmatched URLs answer 404 without telling who may see what
    principal = _principal_for(request.path, request.method)
    if principal is None:
        return _refuse(request.path, request.full_path.rstrip("?"))
    if request.path == "/metrics":
        require_admin(principal, "Reading metrics")
    g.principal = principal
    if principal.use_unrecorded:
        note_used(db_session(), principal.key_id)
    db_session().commit()
    return None


def for_nginx(answer: Response) -> Response:
    """The key check's "no": 401 (a 401 answer) or 403, with the answer nginx sends in its place.

    nginx's auth_request takes 2xx, 401 or 403 only; it sends ``X-Refusal-Status`` with
    ``X-Refusal-Body`` (or ``Location``), ``Retry-After`` and ``WWW-Authenticate``.
    """
    refusal = Response(status=401 if answer.status_code == 401 else 403)
    refusal.headers["X-Refusal-Status"] = str(answer.status_code)
    if "Location" in answer.headers:
        refusal.headers["Location"] = answer.headers["Location"]
    else:
        refusal.headers["X-Refusal-Body"] = answer.get_data(as_text=True).strip()
    if "Retry-After" in answer.headers:
        refusal.headers["Retry-After"] = answer.headers["Retry-After"]
    return refusal


@bp.get("/_proxy/key-check")
def key_check() -> Response:
    """nginx's question before it reads a body: are the credentials good for X-Original-Method on X-Original-URI?

    204 yes; otherwise the answer the app would give the request (:func:`for_nginx`),
    which nginx sends without reading the body. A body to an unknown path needs
    credentials too. nginx answers 404 to this path from outside.
    """
    original_uri = request.headers.get("X-Original-URI", "")
    path = unquote(urlsplit(original_uri).path)
    try:
        if _principal_for(path, request.headers.get("X-Original-Method", "")) is not None:
            return Response(status=204)
        answer = _refuse(path, original_uri)
    except Exception as exc:  # a bad key (401), or the database down (503)
        answer = error_response(to_api_error(exc))
    return for_nginx(answer)


def _presented_credentials() -> bool:
    """Whether the request presented credentials: an ``Authorization`` header (nginx's key check sees the
    client's), or the sign-in form's ``key``. A session cookie is not one: a browser whose session ended has
    been signed out, not refused."""
    if request.headers.get("Authorization"):
        return True
    return request.endpoint in KEY_CHECKING_ENDPOINTS and bool(request.form.get("key", "").strip())


def refused_credentials(response: Response) -> bool:
    """A failed authentication: credentials presented, and refused (401). A missing key is not one."""
    return response.status_code == 401 and _presented_credentials()


def _challenge(response: Response) -> Response:
    if response.status_code == 401:
        response.headers.setdefault("WWW-Authenticate", CHALLENGE)
        if refused_credentials(response):
            AUTH_FAILURES.labels("refused").inc()
    return response


def init_app(app: Flask) -> None:
    """After :func:`app.auth_throttle.init_app`: an address over its limit is refused before its credentials
    are checked."""
    app.before_request(_authenticate)
    app.after_request(_challenge)
    app.register_blueprint(bp)

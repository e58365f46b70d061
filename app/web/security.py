"""Browser protections: the secret key, CSRF tokens on the web forms, and security headers on every response.

The JSON API is for programmatic clients and is exempt from CSRF (it sets no cookies); the one write it takes
from a signed-in browser, the upload form's resumable upload, carries the page's token in ``X-CSRFToken``
(``app/auth.py``), so a token lasts as long as the session.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from flask import Blueprint, Flask, Response, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

from config.paths import VAR_DIR

SECRET_KEY_PATH = VAR_DIR / "secret_key"
# Scripts and styles only from static files: no inline script, no inline style attributes, nothing from outside.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

csrf = CSRFProtect()
SESSION_LIFETIME = timedelta(hours=12)


class SecureWhenHttpsSessionInterface(SecureCookieSessionInterface):
    """The signed session cookie, marked Secure whenever the request came over HTTPS (behind the router too)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


def load_secret_key(path: Path) -> str:
    """The key stored at ``path``, generated there first (mode 0600) when missing.

    The key is written to a temporary file and linked into place, so processes
    starting together all read the one key that won.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_hex(32))
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    return path.read_text().strip()


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def init_app(app: Flask, secret_key: str | None, csrf_exempt: Iterable[Blueprint]) -> None:
    """Set the secret key (``secret_key``, else the generated one), enable CSRF and add the headers."""
    app.config["SECRET_KEY"] = secret_key or load_secret_key(SECRET_KEY_PATH)
    # Assigned, not setdefault: Flask defines these keys already (SAMESITE as None).
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["PERMANENT_SESSION_LIFETIME"] = SESSION_LIFETIME
    # A page's CSRF token is good as long as the session (Flask-WTF's default is an hour): the upload form
    # sends it with every piece of a resumable upload (``X-CSRFToken``, app/auth.py), which may take hours.
    app.config["WTF_CSRF_TIME_LIMIT"] = int(SESSION_LIFETIME.total_seconds())
    app.session_interface = SecureWhenHttpsSessionInterface()
    csrf.init_app(app)
    for blueprint in csrf_exempt:
        csrf.exempt(blueprint)
    app.after_request(_security_headers)

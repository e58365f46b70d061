"""``/sign-in`` and ``/sign-out``: a browser signs in with an API key and keeps a signed session cookie.

The key is typed into a password field and posted with a CSRF token; the cookie
holds only the key's id (see ``app/auth.py``). ``next`` only ever leads back into
this site.
"""

from __future__ import annotations

from flask import Response, redirect, render_template, request, session, url_for

from accounts.keys import find_principal
from app.auth import SESSION_KEY
from app.extensions import db_session
from app.web import bp

SignInPage = tuple[str, int]


def _local_path(target: str | None) -> str:
    """``target`` when it is a path on this site, else the upload page."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("web.upload_form")


@bp.get("/sign-in")
def sign_in_form() -> SignInPage:
    return render_template("sign_in.html", next=request.args.get("next", "")), 200


@bp.post("/sign-in")
def sign_in() -> Response | SignInPage:
    key = request.form.get("key", "").strip()
    principal = find_principal(db_session(), key) if key else None
    target = request.form.get("next", "")
    if principal is None:
        message = "That API key is not valid, or was revoked."
        return render_template("sign_in.html", next=target, error=message), 401
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = str(principal.key_id)
    return redirect(_local_path(target), 303)


@bp.post("/sign-out")
def sign_out() -> Response:
    session.clear()
    return redirect(url_for("web.sign_in_form"), 303)

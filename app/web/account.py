"""``/sign-in`` and ``/sign-out``: a browser signs in with an API key and keeps a signed session cookie.

The key is typed into a password field and posted with a CSRF token; the cookie
holds only the key's id (see ``app/auth.py``). ``next`` only ever leads back into
this site, judged as the browser will read it: ``/<TAB>/evil.example`` and
``/\\evil.example`` start with one slash, yet a browser goes to evil.example.
"""

from __future__ import annotations

import re

from flask import Response, redirect, render_template, request, session, url_for
from werkzeug.urls import iri_to_uri

from accounts.keys import find_principal
from app.auth import SESSION_KEY
from app.extensions import db_session
from app.web import bp

SignInPage = tuple[str, int]


# What the WHATWG URL parser removes before anything else: C0 controls and spaces at either end,
# tabs and newlines anywhere.
C0_CONTROL_OR_SPACE = "".join(map(chr, range(0x21)))
NO_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")


def _local_path(target: str) -> str:
    """``target`` when a browser reads it as a path on this site, else the upload page.

    Read as the WHATWG URL parser reads it: cleaned as above, and a backslash in the path
    (up to ``?`` or ``#``) read as a slash. What is left is a path on this site when it
    starts with one slash, not two: anything else has a scheme, an authority (``//host``)
    or is relative. It comes back percent-encoded (``iri_to_uri``), so no control
    character reaches the ``Location`` header.
    """
    url = target.strip(C0_CONTROL_OR_SPACE).translate(NO_TAB_OR_NEWLINE)
    path_end = len(re.split(r"[?#]", url, maxsplit=1)[0])
    path = url[:path_end].replace("\\", "/")
    if not path.startswith("/") or path.startswith("//"):
        return url_for("web.upload_form")
    return iri_to_uri(path + url[path_end:])


@bp.get("/sign-in")
def sign_in_form() -> SignInPage:
    return render_template("sign_in.html", next=_local_path(request.args.get("next", ""))), 200


@bp.post("/sign-in")
def sign_in() -> Response | SignInPage:
    key = request.form.get("key", "").strip()
    principal = find_principal(db_session(), key) if key else None
    target = _local_path(request.form.get("next", ""))
    if principal is None:
        message = "That API key is not valid, or was revoked."
        return render_template("sign_in.html", next=target, error=message), 401
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = str(principal.key_id)
    return redirect(target, 303)


@bp.post("/sign-out")
def sign_out() -> Response:
    session.clear()
    return redirect(url_for("web.sign_in_form"), 303)

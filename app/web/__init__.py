"""The web pages: the upload form, a job's progress and results, and the recent jobs.

Handlers are thin: the form posts to the same :class:`jobs.service.JobService` the JSON API
uses (through ``app.job_actions``), and the pages read jobs through it, in the request's session.
Templates live in ``app/templates``, scripts and styles in ``app/static`` (no inline script or style).
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Blueprint, Flask

from app.web import security

bp = Blueprint("web", __name__)

from app.web import account, jobs, upload  # noqa: E402,F401  (routes register on bp)


def init_app(app: Flask, secret_key: str | None, csrf_exempt: Iterable[Blueprint]) -> None:
    security.init_app(app, secret_key, csrf_exempt)
    app.register_blueprint(bp)

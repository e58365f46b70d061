"""The yolo-jobs HTTP API: ``gunicorn -c gunicorn.conf.py "app:create_app()"``.

This package speaks HTTP only. It stores uploads through ``storage`` and sends
tasks to the workers by name; it never imports ``tasks``, torch or ultralytics.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask

from storage import Settings
from storage.logs import configure_logging


def create_app(config: Mapping[str, str] | None = None) -> Flask:
    """Build the app from environment variables, overridden by ``config`` (same names)."""
    settings = Settings.from_env({**os.environ, **(config or {})})
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        CELERY_BROKER_URL=settings.broker_url,
    )
    app.config.update(config or {})
    app.json.sort_keys = False
    if not app.testing:
        configure_logging(settings.log_format)

    from app import dispatch, errors, metrics, store, uploads, web
    from app.api import bp as api_bp
    from app.health import bp as health_bp
    from app.job_service import JobService

    errors.init_app(app)
    store.init_app(app, settings)
    uploads.init_app(app)
    dispatch.init_app(app)
    metrics.init_app(app)
    app.extensions["yolo_job_service"] = JobService(
        app.extensions["yolo_storage"], app.extensions["yolo_dispatcher"], list(settings.models), settings.default_model
    )
    app.register_blueprint(api_bp)
    app.register_blueprint(health_bp)
    web.init_app(app, settings.secret_key, csrf_exempt=[api_bp])

    return app

"""The yolo-jobs HTTP API and web pages: ``gunicorn -c python:gunicorn_config "app:create_app()"``.

This package speaks HTTP only. It changes jobs through ``jobs`` (the lifecycle),
keeps bytes and rows through ``storage``, and sends tasks to the workers by name
(``jobs.messages``); it never imports ``tasks``, torch or ultralytics.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from config import Settings
from config.logs import configure_logging


def create_app(settings: Settings | None = None, **flask_overrides: Any) -> Flask:
    """Build the app from ``settings`` (default: read from the environment) and Flask config overrides."""
    from app import openapi

    settings = settings or Settings.from_env()
    app = openapi.new_app(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.api.max_upload_bytes, **flask_overrides)
    app.json.sort_keys = False
    if not app.testing:
        configure_logging(settings.log_format)

    from app import auth, auth_throttle, cli, converters, errors, extensions, metrics, quotas, uploads, web
    from app.api import bp as api_bp
    from app.health import bp as health_bp

    converters.init_app(app)
    extensions.init_app(app, settings)
    errors.init_app(app)
    uploads.init_app(app, settings)
    metrics.init_app(app)
    auth_throttle.init_app(app)  # before auth: an address over its limit is refused before its key is checked
    auth.init_app(app)
    quotas.init_app(app, settings)  # after auth: its limits are per tenant
    cli.init_app(app)
    app.register_api(api_bp)
    openapi.init_app(app)
    app.register_blueprint(health_bp)
    web.init_app(app, settings.api.secret_key, csrf_exempt=[api_bp])
    return app

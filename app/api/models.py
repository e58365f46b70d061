"""/api/v1/models: the configured models, their classes and whether their weights are present.

Weights paths are server details: only admin keys see them.
"""

from __future__ import annotations

from flask import Response, jsonify

from app.api import bp
from app.api.schemas import ModelList
from app.auth import current_principal
from app.extensions import db_session, get_settings
from jobs.catalog import reported_models, weights_present


@bp.get("/models", responses={200: ModelList})
def list_models() -> Response:
    """The configured models: whether their weights are present, and their classes as the workers report them."""
    settings = get_settings()
    admin = current_principal().admin
    reported = reported_models(db_session())
    models = []
    for name, weights in settings.models.items():
        record = reported.get(name)
        same_weights = record is not None and record.weights == weights
        models.append(
            {
                "name": name,
                "default": name == settings.default_model,
                "weights": weights if admin else None,
                "weights_present": weights_present(weights),
                "task": record.task if same_weights else None,
                "classes": record.classes if same_weights else None,
                "weights_sha256": record.weights_sha256 if same_weights else None,
                "loaded_at": record.loaded_at.isoformat() if same_weights else None,
            }
        )
    return jsonify({"models": models})

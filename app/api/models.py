"""/api/v1/models: the configured models, their classes and whether their weights are present."""

from __future__ import annotations

from flask import Response, current_app, jsonify

from app.api import bp
from app.store import get_storage
from storage.model_catalog import known_models, weights_present


@bp.get("/models")
def list_models() -> Response:
    settings = current_app.extensions["yolo_settings"]
    with get_storage().session() as session:
        reported = known_models(session)
    models = []
    for name, weights in settings.models.items():
        info = reported.get(name)
        same_weights = info is not None and info.weights == weights
        models.append(
            {
                "name": name,
                "default": name == settings.default_model,
                "weights": weights,
                "weights_present": weights_present(weights),
                "task": info.task if same_weights else None,
                "classes": info.classes if same_weights else None,
                "weights_sha256": info.weights_sha256 if same_weights else None,
                "loaded_at": info.loaded_at.isoformat() if same_weights else None,
            }
        )
    return jsonify({"models": models})

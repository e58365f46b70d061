"""/api/v1/models: the configured models, their classes, sizes and aliases, and whether their weights are present.

Weights paths are server details: only admin keys see them.
"""

from __future__ import annotations

from flask import Response, jsonify

from app.api import bp
from app.api.schemas import ModelList
from app.auth import current_principal
from app.extensions import db_session, get_settings
from jobs.catalog import configured_models


@bp.get("/models", responses={200: ModelList})
def list_models() -> Response:
    """The configured models: whether their weights are present, and their classes as the workers report them."""
    settings = get_settings()
    admin = current_principal().admin
    models = []
    for info in configured_models(db_session(), settings):
        record = info.record
        models.append(
            {
                "name": info.name,
                "aliases": settings.aliases_of(info.name),
                "default": info.name == settings.default_model,
                "weights": info.weights if admin else None,
                "weights_present": info.present,
                "task": record.task if record else None,
                "classes": record.classes if record else None,
                "stride": record.stride if record else None,
                "imgsz": info.size_for(None),
                "weights_sha256": record.weights_sha256 if record else None,
                "loaded_at": record.loaded_at.isoformat() if record else None,
            }
        )
    return jsonify({"models": models})

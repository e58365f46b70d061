"""/api/v1/models: the model registry. Every key lists the models and reads one; admin keys register a model
and retire one, at run time (``jobs.registry``): no API process or worker restarts.

Retiring is ``POST /models/<name>/retire``, not a DELETE: the model stays, listed with its ``retired_at`` and
readable, because the jobs that ran on it keep its classes and its name is never given to other weights; only new
jobs are refused it (400 ``model_retired``). Weights paths are server details: only admin keys see them.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, url_for

from app.api import bp
from app.api.schemas import ErrorBody, Model, ModelList, ModelPath, ModelRegistration
from app.auth import current_principal, require_admin
from app.extensions import db_session, get_job_service, get_settings
from jobs.catalog import ModelInfo
from jobs.registry import Weights


def model_json(info: ModelInfo, admin: bool) -> dict[str, Any]:
    """A model as the API shows it (``Model``): its weights path to admin keys only."""
    settings = get_settings()
    record = info.record
    return {
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
        "loaded_at": record.loaded_at.isoformat() if record and record.loaded_at else None,
        "fixed_imgsz": info.fixed_imgsz,
        "source": info.source,
        "registered_at": info.registered_at.isoformat() if info.registered_at else None,
        "retired_at": info.retired_at.isoformat() if info.retired_at else None,
    }


@bp.get("/models", responses={200: ModelList})
def list_models() -> Response:
    """The registered models, the default first and retired ones too.

    Whether each one's weights are present, and its classes, stride and sizes as the workers report them.
    """
    admin = current_principal().admin
    models = get_job_service().models.listing(db_session(), retired=True)
    return jsonify({"models": [model_json(info, admin) for info in models]})


@bp.get("/models/<name>", responses={200: Model, 404: ErrorBody})
def show_model(path: ModelPath) -> Response:
    """One registered model, retired or not (an alias names its model); 404 not_found."""
    info = get_job_service().models.find(db_session(), path.name)
    return jsonify(model_json(info, current_principal().admin))


@bp.post("/models", responses={201: Model, 403: ErrorBody, 409: ErrorBody, 410: ErrorBody, 422: ErrorBody})
def register_model(body: ModelRegistration) -> tuple[Response, int, dict[str, str]]:
    """Register a model (admin keys only): its name, and its weights as a path on the server or a stored file.

    A path must lie under STORAGE_ROOT (the volume the workers share) or the bundled model's folder, and hold
    .pt, .onnx or .engine weights or an OpenVINO export folder. A stored file (`file_id`: a .pt or .onnx file sent
    by a resumable upload with `purpose` `weights` in its `Upload-Metadata`) is linked into `models/` on the
    volume. Jobs may ask for the model at once: each worker process loads
    it on its first job. 400 invalid_parameter; 403 forbidden; 409 model_exists (names are never reused); 410
    gone; 422 weights_not_allowed, weights_not_found, invalid_weights, unknown_file.
    """
    principal = current_principal()
    require_admin(principal, "Registering a model")
    weights = Weights(body.weights, body.file_id)
    info = get_job_service().models.register(db_session(), body.name, weights, principal.tenant_id, principal.key_id)
    headers = {"Location": url_for("api.show_model", name=info.name)}
    return jsonify(model_json(info, admin=True)), 201, headers


@bp.post("/models/<name>/retire", responses={200: Model, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody})
def retire_model(path: ModelPath) -> Response:
    """Retire a model (admin keys only).

    New jobs asking for it get 400 model_retired, and jobs accepted before still run. It stays listed, with its
    retired_at; retiring it again changes nothing. 404 not_found; 403 forbidden; 409 configured_model for the
    default model and the models YOLO_MODELS registers (leave one out of YOLO_MODELS to retire it).
    """
    principal = current_principal()
    require_admin(principal, "Retiring a model")
    info = get_job_service().models.retire(db_session(), path.name, principal.key_id)
    return jsonify(model_json(info, admin=True))

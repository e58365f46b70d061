"""Liveness (/healthz) and readiness (/readyz: database, broker and storage reachable)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.extensions import get_dispatcher, get_storage

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    storage = get_storage()
    checks = {
        "database": storage.database.is_reachable(),
        "broker": get_dispatcher().broker_is_reachable(),
        "storage": storage.blobs.is_writable(),
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        message = f"Not ready: {', '.join(failed)} unreachable."
        body = {"status": "unavailable", "checks": checks, "error": {"code": "not_ready", "message": message}}
        return jsonify(body), 503
    return jsonify({"status": "ok", "checks": checks}), 200

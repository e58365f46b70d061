"""The JSON API under /api/v1."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from app.api import annotated, exports, files, jobs, limits, models  # noqa: E402,F401  (routes register on bp)

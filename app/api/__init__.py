"""The JSON API under /api/v1, each route documented in ``/api/v1/openapi.json`` (:mod:`app.openapi`).

A route declares its path/query/header models by annotation and its answers in
``responses`` (models from :mod:`app.api.schemas`); the answers every route can
give (400, 401, 503) are declared once here.
"""

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint

from app.api.schemas import SECURITY, ErrorBody


def operation_id(*, bp_name: str, name: str, path: str, method: str) -> str:
    """An operation is named after its view (``submit_job``): the names the document's links use."""
    return name


bp = APIBlueprint(
    "api",
    __name__,
    url_prefix="/api/v1",
    abp_security=SECURITY,
    abp_responses={400: ErrorBody, 401: ErrorBody, 503: ErrorBody},
    operation_id_callback=operation_id,
)


@bp.get("/openapi.json", doc_ui=False)
def openapi_document() -> Response:
    """This API as an OpenAPI 3.1 document (public)."""
    return jsonify(current_app.api_doc)


# The routes register on bp as their modules are imported.
from app.api import (  # noqa: E402,F401
    account,
    annotated,
    deletions,
    export_formats,
    exports,
    files,
    frames,
    jobs,
    limits,
    models,
    predict,
    progress,
    signed_files,
    tus,
)

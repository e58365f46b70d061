"""The API described as OpenAPI 3.1, generated from the views: the document at ``GET /api/v1/openapi.json``
and a Swagger UI page at ``GET /api/docs``.

flask-openapi3 builds the document from each ``app.api`` route: its path, query and
header models (:mod:`app.api.schemas`, validated before the view runs), its
``responses``, and its docstring. A parameter that fails validation is 400
``invalid_parameter`` in the usual error body. Both the document and the page are
public: they describe the API's shape and hold no tenant's data, and a developer
needs them before having a key. The page runs Swagger UI from the files the
``flask-openapi3-swagger`` package ships (no CDN), started by ``static/docs.js``
(no inline script), under the app's Content-Security-Policy (with ``data:`` images
allowed on that page for the icons its stylesheet embeds).
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import flask_openapi3_swagger
from flask import Blueprint, Flask, Response, make_response, render_template
from flask_openapi3 import Info, OpenAPI
from pydantic import ValidationError

from app.api.schemas import SECURITY_SCHEMES, ErrorBody
from app.errors import ApiError
from app.web.security import CONTENT_SECURITY_POLICY

INFO = Info(
    title="yolo-jobs",
    version="1",
    description=(
        "YOLO object detection as durable jobs: upload images, poll the job, read detections.\n\n"
        'Every error is `{"error": {"code": "...", "message": "..."}}` with a 4xx/5xx status.'
    ),
)
SWAGGER_UI = Path(flask_openapi3_swagger.__file__).parent / "templates" / "swagger"

# The site's policy, but for the icons swagger-ui.css embeds as data: SVG images (on this page only).
DOCS_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace("img-src 'self'", "img-src 'self' data:")

docs = Blueprint("docs", __name__, static_folder=SWAGGER_UI, static_url_path="/api/docs/assets")


def invalid_parameter(exc: ValidationError) -> NoReturn:
    """A path, query or header parameter failed its model: 400 ``invalid_parameter`` naming it."""
    first = exc.errors(include_url=False)[0]
    name = ".".join(str(part) for part in first["loc"]) or "request"
    raise ApiError(400, "invalid_parameter", f"{name}: {first['msg']}.")


def new_app(import_name: str) -> OpenAPI:
    """A Flask app that documents the routes of its :class:`flask_openapi3.APIBlueprint` blueprints."""
    return OpenAPI(
        import_name,
        info=INFO,
        security_schemes=SECURITY_SCHEMES,
        doc_ui=False,  # the page is ours (below): the plugin's has inline script, which the CSP forbids
        validation_error_status=400,
        validation_error_model=ErrorBody,
        validation_error_callback=invalid_parameter,
    )


@docs.get("/api/docs")
def page() -> Response:
    response = make_response(render_template("docs.html"))
    response.headers["Content-Security-Policy"] = DOCS_CONTENT_SECURITY_POLICY
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(docs)

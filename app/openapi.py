"""The API described as OpenAPI 3.1, generated from the views: the document at ``GET /api/v1/openapi.json``
and a Swagger UI page at ``GET /api/docs``.

flask-openapi3 builds the document from each ``app.api`` route: its path, query and
header models (:mod:`app.api.schemas`, validated before the view runs), its
``responses``, and its docstring. A parameter that fails validation is 400
``invalid_parameter`` in the usual error body.

Once built, the document gets what flask-openapi3 would take from every route's decorator, from here instead,
so that no route can forget it: each operation's tag (:data:`TAGS`, by the view's module, which clients
generated from the document turn into one module per tag: ``api.jobs``, ``api.exports``…), and its text from
the view's docstring read as paragraphs of plain text: the first paragraph is the summary, the others the
description. flask-openapi3 would take the docstring's first *line* as the summary, cut mid-sentence where the
sentence wraps, and join the other lines with ``<br/>``. Every other description (a schema's, from its model's
docstring) has its lines joined too. Docstrings of views and models hold no reST: it would show as it is written
in Swagger UI and in generated clients (a unit test walks the document for it).

Both the document and the page are
public: they describe the API's shape and hold no tenant's data, and a developer
needs them before having a key. The page runs Swagger UI from the files the
``flask-openapi3-swagger`` package ships (no CDN), started by ``static/docs.js``
(no inline script), under the app's Content-Security-Policy (with ``data:`` images
allowed on that page for the icons its stylesheet embeds).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import flask_openapi3_swagger
from flask import Blueprint, Flask, Response, make_response, render_template
from flask_openapi3 import Info, OpenAPI
from flask_openapi3.utils import parse_rule
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

# The document's tags, in the order the docs page lists them.
TAGS = {
    "jobs": "Submit images and stored files as a job, follow it, read its detections; cancel, retry, rerun, delete.",
    "predict": "One image's detections in one call, over a durable job.",
    "exports": "A finished job's detections as the files labelling and training tools import.",
    "files": "Stored files: their metadata and bytes, a job's images with their boxes drawn, a video's frames.",
    "uploads": "Files of any size, in resumable pieces (tus 1.0).",
    "models": "The models a job can run.",
    "account": "The caller's tenant: its webhook signing secret and its storage against its quotas.",
}
# Each app.api module's operations are under its tag, but the views named in VIEW_TAGS.
MODULE_TAGS = {
    "account": "account",
    "annotated": "files",
    "deletions": "jobs",
    "export_formats": "exports",
    "exports": "exports",
    "files": "files",
    "frames": "files",
    "jobs": "jobs",
    "limits": "jobs",
    "models": "models",
    "predict": "predict",
    "progress": "jobs",
    "signed_files": "files",
    "tus": "uploads",
}
VIEW_TAGS = {"delete_file": "files", "annotated_zip": "exports"}
# What a docstring's paragraphs are parted by.
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def invalid_parameter(exc: ValidationError) -> NoReturn:
    """A path, query or header parameter failed its model: 400 ``invalid_parameter`` naming it."""
    first = exc.errors(include_url=False)[0]
    name = ".".join(str(part) for part in first["loc"]) or "request"
    raise ApiError(400, "invalid_parameter", f"{name}: {first['msg']}.")


def tag_of(view: Callable[..., Any]) -> str | None:
    """The tag of a view's operation: by its name, else by its module (None for a module of no ``app.api``)."""
    module = view.__module__.removeprefix("app.api.")
    return VIEW_TAGS.get(view.__name__) or MODULE_TAGS.get(module)


def unwrap(text: str) -> str:
    """``text`` with each paragraph's lines joined into one (a docstring's lines are wrapped to fit the code)."""
    return "\n\n".join(" ".join(part.split()) for part in PARAGRAPH_BREAK.split(text.strip()))


def plain_text(docstring: str) -> tuple[str, str]:
    """A docstring's first paragraph and its other paragraphs, each paragraph's lines joined into one."""
    summary, _, description = unwrap(docstring).partition("\n\n")
    return summary, description


def unwrap_descriptions(node: Any) -> None:
    """Unwrap every description in ``node``, a part of the document: a schema's comes from its model's docstring."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = unwrap(value)
            else:
                unwrap_descriptions(value)
    elif isinstance(node, list):
        for value in node:
            unwrap_descriptions(value)


class DocumentedApp(OpenAPI):
    """flask-openapi3's app, whose document tags each operation and takes its text from its view's docstring."""

    def generate_spec_json(self) -> None:
        super().generate_spec_json()
        for rule in self.url_map.iter_rules():
            operations = self.spec_json["paths"].get(parse_rule(rule.rule), {})
            view = self.view_functions[rule.endpoint]
            for method in rule.methods or ():
                if (operation := operations.get(method.lower())) is not None:
                    describe(operation, view)
        unwrap_descriptions(self.spec_json)
        used = {tag for item in self.spec_json["paths"].values() for op in item.values() for tag in op["tags"]}
        self.spec_json["tags"] = [{"name": name, "description": text} for name, text in TAGS.items() if name in used]


def describe(operation: dict[str, Any], view: Callable[..., Any]) -> None:
    """Give ``operation`` its view's tag, and its docstring as its summary and description."""
    tag = tag_of(view)
    if tag is not None:
        operation["tags"] = [tag]
    docstring = inspect.getdoc(view)
    if docstring:
        operation["summary"], description = plain_text(docstring)
        if description:
            operation["description"] = description
        else:
            operation.pop("description", None)


def new_app(import_name: str) -> OpenAPI:
    """A Flask app that documents the routes of its :class:`flask_openapi3.APIBlueprint` blueprints."""
    return DocumentedApp(
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

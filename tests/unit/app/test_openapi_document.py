"""The OpenAPI document reads well wherever it is shown: in Swagger UI, in a generated client's docstrings.

Every operation is under one of the document's tags (a generated client's module), and every summary and
description is plain text: no reST from a docstring (``x`` shows as it is written), no HTML (flask-openapi3's
``<br/>``), and a summary that is the docstring's whole first paragraph, one short sentence, not its first line
cut mid-sentence. The export formats each have an operation that declares the content type the format answers.
Built in process from the views, with no service: the document needs none.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from app import create_app, extensions
from app.openapi import TAGS, plain_text
from config import Settings
from jobs.exports import FORMATS, JobExport
from jobs.video_exports import VIDEO_FORMATS, VideoExport

# Swagger UI shows a summary as it is written, in one line of the operation's bar.
MAX_SUMMARY = 120
# reST that a docstring may hold and a reader of the document would see as it is.
REST = re.compile(r"``|:[a-z]+:`|[^\s`]`__?(?![\w`])|^\.\. ", re.MULTILINE)
# An HTML tag, as Markdown renderers pass it on (or drop it): outside a code span, `<id>` is one.
HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
CODE_SPAN = re.compile(r"`[^`]*`")


@pytest.fixture(scope="module")
def document() -> Iterator[dict[str, Any]]:
    app = create_app(Settings.from_env({"SECRET_KEY": "document"}), TESTING=True)
    yield app.test_client().get("/api/v1/openapi.json").get_json()
    extensions.dispose(app)


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def texts(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every summary and description in the document (operations, parameters, responses, schemas, tags)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("summary", "description") and isinstance(value, str):
                yield f"{where}/{key}", value
            else:
                yield from texts(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from texts(value, f"{where}/{index}")


def test_every_operation_is_under_one_of_the_declared_tags(document: dict[str, Any]) -> None:
    untagged = {label: op.get("tags") for label, op in operations(document) if op.get("tags", [""])[0] not in TAGS}
    assert untagged == {}, "map the view's module in app.openapi.MODULE_TAGS"
    assert all(len(op["tags"]) == 1 for _, op in operations(document))
    declared = [tag["name"] for tag in document["tags"]]
    assert set(declared) == {op["tags"][0] for _, op in operations(document)}
    assert {"jobs", "files", "exports", "models", "account", "uploads"} <= set(declared)
    assert all(tag["description"] for tag in document["tags"])


def test_every_summary_is_one_short_plain_sentence(document: dict[str, Any]) -> None:
    bad = {
        label: summary
        for label, op in operations(document)
        if not (summary := op.get("summary", ""))
        or len(summary) > MAX_SUMMARY
        or not summary.endswith(".")
        or "`" in summary
        or "\n" in summary
    }
    rule = f"a summary is the docstring's first paragraph: one sentence, {MAX_SUMMARY} characters at most, no `"
    assert not bad, "\n".join([rule, *(f"{label}: {summary}" for label, summary in bad.items())])


def test_no_summary_or_description_holds_rest_or_html(document: dict[str, Any]) -> None:
    marked = {
        where: text
        for where, text in texts(document)
        if REST.search(text) or HTML_TAG.search(CODE_SPAN.sub("", text)) or re.search(r"\S\n\S", text)
    }
    assert not marked, "\n".join(f"{where}: {text!r}" for where, text in marked.items())


def test_a_docstring_is_read_as_paragraphs() -> None:
    docstring = "The first line\n    and the rest of it.\n\n    A second\n    paragraph.\n\n    A third."
    assert plain_text(docstring) == ("The first line and the rest of it.", "A second paragraph.\n\nA third.")
    assert plain_text("One line.") == ("One line.", "")


def answered_types() -> dict[str, str]:
    """Each export format's media type, as the format answers it (an image job's, else a video's)."""
    empty = JobExport(job_id="j", model="m", status="succeeded", classes={}, images=[])
    video = VideoExport(
        job_id="j",
        upload_id="u",
        filename="v.mp4",
        width=1,
        height=1,
        fps=1.0,
        sampled_fps=None,
        frames_total=0,
        names={},
        rows=lambda: iter(()),
    )
    types = {name: build(video).media_type for name, build in VIDEO_FORMATS.items()}
    return types | {name: build(empty).media_type for name, build in FORMATS.items()}


@pytest.mark.parametrize(("export_format", "media_type"), sorted(answered_types().items()))
def test_each_export_format_has_an_operation_declaring_what_it_answers(
    document: dict[str, Any], export_format: str, media_type: str
) -> None:
    operation = document["paths"][f"/api/v1/jobs/{{job_id}}/export/{export_format}"]["get"]
    assert operation["tags"] == ["exports"]
    assert media_type in operation["responses"]["200"]["content"]
    assert operation["operationId"] == f"export_{export_format.replace('-', '_')}"
    query_form = document["paths"]["/api/v1/jobs/{job_id}/export"]["get"]["responses"]["200"]["content"]
    assert media_type in query_form
    assert next(iter(query_form)) == "application/octet-stream", "what generated clients read the query form as"

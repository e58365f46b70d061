"""The OpenAPI document against the live API: Schemathesis drives a real gunicorn with a real key.

Every operation of the served document gets generated requests, valid and not;
then a state machine follows the document's links from a submitted job (with a
real PNG) to showing, cancelling and retrying it and to its file. Each answer must
not be a 5xx and must match the document: status code, content type, headers and
body. The API here has a RabbitMQ vhost of its own (no worker: jobs stay queued or
are cancelled), purged afterwards, and a tenant of its own. The totals (operations,
cases, failures) go to the output and to ``test-artifacts/schemathesis-totals.json``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import requests
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from harness.images import image_bytes
from harness.processes import start_api
from tests.conftest import ARTIFACTS, VhostPool, open_storage
from tests.functional.browser import watched_page
from tests.helpers import TestKey, add_key

if TYPE_CHECKING:
    from playwright.sync_api import Browser


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Enough to reach every documented answer of each operation, bounded: about a minute in all on 2 cores.
PER_OPERATION = settings(
    max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)
STATEFUL = settings(
    max_examples=15,
    stateful_step_count=6,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
SUBMIT = "POST /api/v1/jobs"
# A tus piece's body (PATCH /api/v1/uploads/{upload_id}) is bytes: sent as Schemathesis sends application/octet-stream.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")

totals: Counter[str] = Counter()
operations: set[str] = set()
answers: Counter[str] = Counter()  # "POST /api/v1/jobs 202": what the cases reached


@pytest.fixture(scope="module")
def openapi_key(services_env: dict[str, str]) -> TestKey:
    store = open_storage(services_env)
    try:
        return add_key(store, "schemathesis", label="schemathesis")
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def openapi_api_url(services_env: dict[str, str], vhost_pool: VhostPool, logs_dir) -> Iterator[str]:
    """A gunicorn of this module's own, on a vhost no worker consumes (its jobs never run): so a prediction answers
    202 at once rather than wait out its timeout for a job that never ends."""
    vhost = vhost_pool.take()
    env = {**services_env, "CELERY_BROKER_URL": vhost, "PREDICT_MAX_WAIT_SECONDS": "0"}
    server, base_url = start_api(env, logs_dir / "gunicorn-openapi.log")
    yield base_url
    server.stop()
    vhost_pool.give_back(vhost)
    (ARTIFACTS / "schemathesis-totals.json").write_text(
        json.dumps({"operations": len(operations), **totals, "answers": dict(sorted(answers.items()))}, indent=2) + "\n"
    )
    print(f"\nschemathesis: {len(operations)} operations, {totals['cases']} cases, {totals['failures']} failures")


@pytest.fixture(scope="module")
def api_schema(openapi_api_url: str) -> BaseSchema:
    """The document as the API serves it, without a key (it is public)."""
    return schemathesis.openapi.from_url(f"{openapi_api_url}/api/v1/openapi.json")


def call_and_check(case: Case, key: TestKey) -> Response:
    """Send ``case`` with the key and run :data:`CHECKS`, counting the case and any failure."""
    operations.add(case.operation.label)
    totals["cases"] += 1
    response = case.call(headers=key.headers)
    answers[f"{case.operation.label} {response.status_code}"] += 1
    try:
        case.validate_response(response, checks=CHECKS, headers=key.headers)
    except BaseException:
        totals["failures"] += 1
        raise
    return response


def test_every_operation_answers_as_documented(api_schema: BaseSchema, openapi_key: TestKey) -> None:
    """Valid and invalid requests for each operation (one Hypothesis run per operation and mode).

    Looped here rather than ``schemathesis.pytest.from_fixture``, whose items fail under pytest 9
    (they read ``Function._nodeid``, gone there).
    """
    failed = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @PER_OPERATION
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Case) -> None:
                call_and_check(case, openapi_key)

            try:
                run()
            except Exception as exc:  # every operation is tried; all findings are reported together
                failed.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failed, "\n\n".join(failed)


def test_links_from_a_submitted_job_answer_as_documented(api_schema: BaseSchema, openapi_key: TestKey) -> None:
    png = image_bytes(seed=1201)

    class Workflow(api_schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Case) -> None:
            if case.operation.label == SUBMIT and isinstance(case.body, dict):
                case.body["image"] = [png]  # a real image, so the submission makes a job to follow

        def get_call_kwargs(self, case: Case) -> dict[str, dict[str, str]]:
            return {"headers": openapi_key.headers}

        def validate_response(self, response: Response, case: Case, **kwargs: object) -> None:
            operations.add(case.operation.label)
            totals["cases"] += 1
            answers[f"{case.operation.label} {response.status_code}"] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except BaseException:
                totals["failures"] += 1
                raise

    Workflow.run(settings=STATEFUL)


def test_every_api_route_is_in_the_document(app: Flask) -> None:
    """A route under /api/v1 that the document lacks would escape Schemathesis and the docs page."""
    document = app.test_client(key=None).get("/api/v1/openapi.json").get_json()
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    routed = {
        (method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/") and rule.endpoint != "api.openapi_document"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routed == documented


def test_a_parameter_failing_its_model_is_400_invalid_parameter(app: Flask) -> None:
    client = app.test_client()
    for url in ("/api/v1/jobs?limit=0", "/api/v1/jobs?limit=abc", "/api/v1/jobs?offset=-1"):
        response = client.get(url)
        assert response.status_code == 400, url
        assert response.get_json()["error"]["code"] == "invalid_parameter"
        assert response.get_json()["error"]["message"].startswith(url.split("?")[1].split("=")[0])
    response = client.post("/api/v1/jobs", headers={"Idempotency-Key": "x" * 256})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_parameter"


def test_the_document_is_public_and_describes_keys_and_the_upload(openapi_api_url: str) -> None:
    document = requests.get(f"{openapi_api_url}/api/v1/openapi.json", timeout=5).json()
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    upload = document["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["properties"]["image"]["type"] == "array"
    assert upload["schema"]["properties"]["image"]["items"]["format"] == "binary"
    assert {p["name"] for p in document["paths"]["/api/v1/jobs"]["post"]["parameters"]} == {"Idempotency-Key"}


@pytest.mark.browser
def test_the_docs_page_shows_every_operation_under_the_csp(
    browser: Browser, openapi_api_url: str, openapi_key: TestKey
) -> None:
    """Swagger UI from the vendored files: no CSP violation, no request leaving the site, and a call made
    from the page with the key entered in its Authorize dialog."""
    with watched_page(browser, openapi_api_url) as watched:
        page = watched.page
        response = page.goto("/api/docs")
        assert response is not None and response.ok
        policy = response.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "unsafe" not in policy
        operations = sum(
            len(path) for path in requests.get(f"{openapi_api_url}/api/v1/openapi.json").json()["paths"].values()
        )
        page.locator(".opblock").nth(operations - 1).wait_for()
        assert page.locator(".opblock").count() == operations
        assert watched.errors == [], "a CSP violation is a console error"
        page.locator(".auth-wrapper button.authorize").click()
        page.locator(".auth-container input").fill(openapi_key.key)
        page.locator(".auth-btn-wrapper button.authorize").click()
        page.locator(".auth-btn-wrapper button.btn-done").click()
        models = page.locator("#operations-models-list_models")
        models.locator(".opblock-summary").click()
        models.get_by_role("button", name="Try it out").click()
        models.get_by_role("button", name="Execute").click()
        status = models.locator(".live-responses-table tbody .response-col_status").first
        status.wait_for()
        assert status.inner_text().strip() == "200"
        assert watched.errors == [] and watched.outside == [] and watched.dialogs == []

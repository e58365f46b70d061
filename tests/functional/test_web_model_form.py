"""The upload form and the model registry, in process: a model an admin registered at run time is offered, stays
chosen when the form comes back with an error, and the form says that a model exported at a fixed size runs at
that size whatever is asked."""

from __future__ import annotations

import uuid

import pytest
from flask import Flask

from app.extensions import EXTENSION
from harness.images import image_bytes
from jobs.catalog import LoadedModel, record_loaded_model
from jobs.registry import Weights
from tests.conftest import MakeApp
from tests.functional.test_web import csrf_token, post_form
from tests.unit.jobs.test_registry import ONNX


@pytest.fixture()
def registered(make_app: MakeApp, isolated_env: dict[str, str], module_database_url: str) -> tuple[Flask, str]:
    """An app on this module's database with a model registered at run time (an ONNX export at a fixed 320,
    as a worker reported it), and the model's name."""
    app = make_app({**isolated_env, "DATABASE_URL": module_database_url}, tenant=f"form-{uuid.uuid4().hex[:8]}")
    yolo = app.extensions[EXTENSION]
    name = f"fixed-{uuid.uuid4().hex[:6]}"
    weights = yolo.storage.blobs.root / "models" / f"{name}.onnx"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(ONNX)
    report = LoadedModel(name, str(weights), None, "detect", {"0": "circle"}, 32, 320, fixed_imgsz=320)
    with yolo.storage.database.session() as session:
        yolo.job_service.models.register(session, name, Weights(str(weights)), None, None)  # commits
    with yolo.storage.database.transaction() as session:
        record_loaded_model(session, report)
    return app, name


def test_a_model_registered_at_run_time_stays_chosen_after_an_error(registered: tuple[Flask, str]) -> None:
    app, name = registered
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    assert f'<option value="{name}">{name}</option>' in page, "offered, not chosen: the default is"
    assert 'data-size-rule="This model runs at 320 whatever size is asked."' in page

    refused = post_form(client, ("a.png", image_bytes(seed=2706)), token=csrf_token(client), model=name, conf="2")
    again = refused.get_data(as_text=True)
    assert refused.status_code == 400 and "conf must be a number between 0.0 and 1.0." in again
    assert f'<option value="{name}" selected>{name}</option>' in again, "the user's choice is kept"
    assert '<span id="imgsz-rule">This model runs at 320 whatever size is asked.</span>' in again

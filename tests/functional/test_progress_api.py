"""GET /api/v1/jobs/<job_id>/progress: a window of a job's files as they fill in, and with since only what changed.

The results are written by the test as a running attempt would (tests/functional/job_page_support.py), so each
step decides exactly which files have landed."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, update

from app.annotate import boxes
from storage import Storage
from storage.tables import Job
from tests.conftest import MakeApp
from tests.functional.job_page_support import (
    backdate_results,
    begin,
    cancel,
    detections,
    finish,
    land,
    shapes_job,
)
from tests.helpers import key_of


@pytest.fixture()
def quiet_app(make_app: MakeApp, isolated_env: dict[str, str]) -> Flask:
    """An app whose jobs no worker takes."""
    return make_app(isolated_env)


def progress(client: FlaskClient, job_id: uuid.UUID, **query: Any) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}/progress", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def states(body: dict[str, Any]) -> dict[int, str]:
    return {file["position"]: file["state"] for file in body["files"]}


def test_a_window_fills_in_then_a_poll_brings_only_what_changed(quiet_app: Flask, storage: Storage) -> None:
    client = quiet_app.test_client()
    job = begin(storage, shapes_job(storage, key_of(quiet_app).tenant_id, 5))
    land(storage, job, 0, 1)

    first = progress(client, job.job_id)
    assert (first["status"], first["progress"]) == ("running", {"done": 2, "total": 5})
    assert states(first) == {0: "done", 1: "done", 2: "waiting", 3: "waiting", 4: "waiting"}
    assert (first["offset"], first["limit"], first["files_total"], first["next"]) == (0, 100, 5, None)
    done = first["files"][0]
    expected = boxes(detections(job.shapes[0]))
    assert done["detections"] == len(expected) > 0 and done["error"] is None and done["width"] > 0
    assert [(b["class"], b["confidence"]) for b in done["boxes"]] == [(b.cls, 0.9) for b in expected]
    assert done["boxes"][0]["box"] == pytest.approx(
        [expected[0].x1, expected[0].y1, expected[0].x2, expected[0].y2], abs=0.05
    )
    assert first["names"] == {str(b.cls): b.name for f in (0, 1) for b in boxes(detections(job.shapes[f]))}
    waiting = first["files"][2]
    assert (waiting["boxes"], waiting["detections"], waiting["width"]) == ([], 0, None)

    backdate_results(storage, job.job_id)  # written a minute ago: older than a poll's overlap
    quiet = progress(client, job.job_id, since=first["cursor"])
    assert (quiet["files"], quiet["names"]) == ([], {}), "nothing changed since the last poll"
    land(storage, job, 2)
    news = progress(client, job.job_id, since=quiet["cursor"])
    assert states(news) == {2: "done"} and news["progress"]["done"] == 3

    cancel(storage, job)
    ended = progress(client, job.job_id, since=news["cursor"])
    assert ended["status"] == "cancelled"
    assert {3: "not_reached", 4: "not_reached"}.items() <= states(ended).items()
    assert set(states(ended)) <= {2, 3, 4}, "the files that changed: the last result (within the overlap), the rest"
    assert states(progress(client, job.job_id)) == {0: "done", 1: "done", 2: "done", 3: "not_reached", 4: "not_reached"}


def test_a_poll_brings_a_file_deleted_since(quiet_app: Flask, storage: Storage) -> None:
    client = quiet_app.test_client()
    job = shapes_job(storage, key_of(quiet_app).tenant_id, 3)
    finish(storage, job)
    backdate_results(storage, job.job_id)
    with storage.database.transaction() as session:  # it ended a minute ago: older than any poll's overlap
        session.execute(update(Job).where(Job.id == job.job_id).values(finished_at=func.now() - timedelta(minutes=1)))
    before = progress(client, job.job_id)
    assert states(before) == {0: "done", 1: "done", 2: "done"}
    assert progress(client, job.job_id, since=before["cursor"])["files"] == []

    response = client.delete(f"/api/v1/files/{before['files'][1]['file_id']}")
    assert response.status_code == 204, response.get_data(as_text=True)
    after = progress(client, job.job_id, since=before["cursor"])
    assert states(after) == {1: "deleted"} and after["files"][0]["file_id"] is None


def test_a_window_of_a_large_job_and_its_next(quiet_app: Flask, storage: Storage) -> None:
    client = quiet_app.test_client()
    job = begin(storage, shapes_job(storage, key_of(quiet_app).tenant_id, 5))
    land(storage, job, 2)
    window = progress(client, job.job_id, offset=1, limit=2)
    assert states(window) == {1: "waiting", 2: "done"}
    assert window["next"] == f"/api/v1/jobs/{job.job_id}/progress?offset=3&limit=2"
    last = client.get(window["next"]).get_json()
    assert states(last) == {3: "waiting", 4: "waiting"} and last["next"] is None


@pytest.mark.parametrize(
    "query",
    [{"limit": "0"}, {"limit": "101"}, {"offset": "-1"}, {"since": "yesterday"}, {"since": "2024-01-01T00:00:00"}],
)
def test_bad_parameters_are_400(client: FlaskClient, query: dict[str, str]) -> None:
    response = client.get(f"/api/v1/jobs/{uuid.uuid4()}/progress", query_string=query)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_parameter", query


def test_another_tenants_job_is_404(quiet_app: Flask, make_app: MakeApp, storage: Storage) -> None:
    job = shapes_job(storage, key_of(quiet_app).tenant_id, 1)
    other = make_app(tenant=f"other-{uuid.uuid4().hex[:8]}").test_client()
    for client, job_id in ((other, job.job_id), (quiet_app.test_client(), uuid.uuid4())):
        response = client.get(f"/api/v1/jobs/{job_id}/progress")
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"

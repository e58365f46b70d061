"""Results reused by the real worker: the same bytes, weights and parameters take an earlier result (``cached``),
and a job of 10,000 references runs, bounded, and pages.

Each test's tenant is its own: what another tenant's jobs found is never reused.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import select

from harness.images import image_bytes
from harness.processes import ServiceProcess
from jobs.catalog import weights_sha256
from storage import Storage
from storage.tables import Result, Upload
from tests.functional.reference_support import own_image, submit_json, tenant_session
from tests.helpers import post_job, wait_for_job

LARGE_JOB = 10_000


def results_of(storage: Storage, job_id: str) -> list[Result]:
    with storage.database.transaction() as session:
        query = select(Result).join(Upload, Upload.id == Result.upload_id).where(Result.job_id == uuid.UUID(job_id))
        return list(session.scalars(query.order_by(Upload.position)))


def test_the_same_file_with_the_same_parameters_takes_the_earlier_result(
    storage: Storage, api_url: str, worker: ServiceProcess
) -> None:
    with tenant_session(storage, "reuse") as (key, api):
        data = image_bytes(320, 240, 8101)
        first = post_job(api, api_url, [("a.png", data), ("b.png", image_bytes(100, 80, 8102))], conf="0.2").json()
        inferred = wait_for_job(api_url, first["job_id"], headers=key.headers)
        assert [r["cached"] for r in inferred["results"]] == [False, False]
        made = results_of(storage, first["job_id"])[0]
        assert made.reuse_key and made.weights_sha256 and made.backend and made.precision == "fp32"
        assert made.weights_sha256 == weights_sha256("models/shapes-yolov8n.pt")

        file_id = first["files"][0]["file_id"]
        again = submit_json(api, api_url, {"file_ids": [file_id, file_id], "conf": 0.2}).json()
        cached = wait_for_job(api_url, again["job_id"], headers=key.headers)
        assert cached["status"] == "succeeded", cached
        assert [r["cached"] for r in cached["results"]] == [True, True]
        assert [r["detections"] for r in cached["results"]] == [inferred["results"][0]["detections"]] * 2
        assert (cached["results"][0]["width"], cached["results"][0]["height"]) == (320, 240)
        assert {r.reuse_key for r in results_of(storage, again["job_id"])} == {made.reuse_key}

        other = submit_json(api, api_url, {"file_ids": [file_id], "conf": 0.3}).json()
        changed = wait_for_job(api_url, other["job_id"], headers=key.headers)
        assert [r["cached"] for r in changed["results"]] == [False], "another conf is another key"

    with tenant_session(storage, "reuse-stranger") as (stranger, api):
        theirs = post_job(api, api_url, [("same.png", data)], conf="0.2").json()
        alone = wait_for_job(api_url, theirs["job_id"], headers=stranger.headers)
        assert [r["cached"] for r in alone["results"]] == [False], "another tenant's result is never taken"


def test_a_job_of_ten_thousand_references_runs_and_pages(
    storage: Storage, api_url: str, worker: ServiceProcess
) -> None:
    with tenant_session(storage, "large") as (key, api):
        file_id = str(own_image(storage, key.tenant_id, image_bytes(64, 48, 8201), "tile.png"))
        warm = submit_json(api, api_url, {"file_ids": [file_id]}).json()
        assert wait_for_job(api_url, warm["job_id"], headers=key.headers)["status"] == "succeeded"

        started = time.monotonic()
        response = submit_json(api, api_url, {"file_ids": [file_id] * LARGE_JOB})
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["files_total"] == LARGE_JOB and len(accepted["files"]) == 100
        job = wait_for_job(api_url, accepted["job_id"], timeout=90, headers=key.headers)
        seconds = time.monotonic() - started
        print(f"\na job of {LARGE_JOB} references (reused) submitted and finished in {seconds:.1f} s")
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"done": LARGE_JOB, "total": LARGE_JOB}
        assert (job["files_total"], len(job["files"]), len(job["results"])) == (LARGE_JOB, 100, 100)

        url = f"{api_url}/api/v1/jobs/{accepted['job_id']}"
        last = api.get(url, params={"files_limit": 1000, "files_offset": LARGE_JOB - 300}, timeout=10).json()
        assert (len(last["files"]), len(last["results"]), last["files_offset"]) == (300, 300, LARGE_JOB - 300)
        assert {f["file_id"] for f in last["files"]} == {file_id}
        assert all(r["cached"] and r["width"] == 64 for r in last["results"])
        too_many = api.get(url, params={"files_limit": 1001}, timeout=10)
        assert too_many.status_code == 400

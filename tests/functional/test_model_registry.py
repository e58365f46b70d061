"""Models as data, against the real gunicorn and the session's Celery worker, which is never restarted: an admin
registers a COCO-shaped model at run time and a job runs on it, then retires it and jobs are refused it; an admin
sends local weights by the resumable upload (tus) and a job runs on them, while another key's non-media upload is
still refused; an export made at a fixed size runs a job asking for 640 at its own size, and the job records the
size it ran at; a bad registration is a clear 4xx. Nothing is downloaded: the COCO-shaped model is built from
Ultralytics' YAML, and the weights sent are a copy of the bundled model."""

from __future__ import annotations

import base64
import hashlib
import shutil
import uuid
import warnings
from pathlib import Path

import pytest
import requests

from config.paths import BUNDLED_MODEL
from harness.images import image_bytes
from harness.processes import ServiceProcess
from inference.backends import UltralyticsDetector, choose, load
from storage import Storage
from tests.functional.cli_support import yolo_jobs
from tests.helpers import TestKey, post_job, wait_for_finished
from yolo_jobs_client.errors import EXIT_OK, EXIT_USAGE

MODELS = "/api/v1/models"


@pytest.fixture(scope="module")
def volume_models(services_env: dict[str, str]) -> Path:
    """A folder of this module's own under ``models/`` on the run's shared volume (STORAGE_ROOT)."""
    folder = Path(services_env["STORAGE_ROOT"]) / "models" / f"registry-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def coco_weights(volume_models: Path) -> Path:
    """A YOLO11n with COCO's 80 classes, as the user's ``yolo11n.pt`` is, but untrained: built from its YAML."""
    from ultralytics import YOLO
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    model = YOLO("yolo11n.yaml")
    model.model.names = YAML.load(check_yaml("coco.yaml"))["names"]
    path = volume_models / "yolo11n.pt"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def fixed_export(volume_models: Path) -> Path:
    """The bundled model exported to ONNX at a fixed 320 (its own size is 384): it runs at 320 whatever is asked."""
    from ultralytics import YOLO

    copy = volume_models / "shapes-320.pt"
    shutil.copyfile(BUNDLED_MODEL, copy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation, which Ultralytics' exporter calls
        return Path(YOLO(str(copy)).export(format="onnx", imgsz=320, dynamic=False))


def model_named(api_url: str, key: TestKey, name: str) -> dict:
    response = requests.get(f"{api_url}{MODELS}/{name}", headers=key.headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: requests.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_an_admin_adds_a_model_at_run_time_and_retires_it(
    api_url: str,
    api: requests.Session,
    worker: ServiceProcess,
    admin_key: TestKey,
    api_key: TestKey,
    storage: Storage,
    coco_weights: Path,
) -> None:
    name = f"coco-{uuid.uuid4().hex[:6]}"
    added = yolo_jobs(api_url, admin_key.key, "models", "add", name, "--weights", str(coco_weights), "--on-server")
    assert added.returncode == EXIT_OK, added.stderr
    assert added.stdout == f"{name}\t\t\tactive\t\n", "no worker has loaded it yet: no classes, no size"
    refused = yolo_jobs(api_url, api_key.key, "models", "add", "x", "--weights", str(coco_weights), "--on-server")
    assert refused.returncode != EXIT_OK and "(forbidden)" in refused.stderr, "admin keys only"

    submitted = post_job(api, api_url, [("street.png", image_bytes(96, 64, seed=2701))], model=name)
    assert submitted.status_code == 202, submitted.text
    job = wait_for_finished(storage, submitted.json()["job_id"], timeout=60)
    assert (job.status, job.model, job.imgsz) == ("succeeded", name, None), job.error_message
    assert f"model loaded name={name} " in worker.log_text() and worker.running(), "loaded on its first job"

    shown = model_named(api_url, api_key, name)
    assert len(shown["classes"]) == 80 and (shown["classes"]["0"], shown["classes"]["79"]) == ("person", "toothbrush")
    assert shown["weights_sha256"] == hashlib.sha256(coco_weights.read_bytes()).hexdigest()
    assert (shown["weights"], shown["source"], shown["imgsz"], shown["fixed_imgsz"]) == (None, "api", 640, None)
    listed = yolo_jobs(api_url, api_key.key, "models")
    assert f"{name}\t\tperson,bicycle,car," in listed.stdout and listed.stdout.startswith("shapes\tdefault\t")

    retired = yolo_jobs(api_url, admin_key.key, "models", "retire", name)
    assert retired.returncode == EXIT_OK and "\tretired\t640\n" in retired.stdout, retired.stderr
    refused_job = post_job(api, api_url, [("street.png", image_bytes(96, 64, seed=2702))], model=name)
    assert error_of(refused_job) == (400, "model_retired") and name in refused_job.json()["error"]["message"]
    cli_job = yolo_jobs(api_url, api_key.key, "submit", "--file-id", str(job.uploads[0].file_id), "--model", name)
    assert cli_job.returncode == EXIT_USAGE and "(model_retired)" in cli_job.stderr
    assert model_named(api_url, api_key, name)["retired_at"] is not None, "still listed: its jobs keep its classes"


def test_an_admin_sends_weights_by_tus_and_a_job_runs_on_them_while_other_keys_still_get_415(
    api_url: str,
    api: requests.Session,
    worker: ServiceProcess,
    admin_key: TestKey,
    api_key: TestKey,
    storage: Storage,
    tmp_path: Path,
) -> None:
    local = tmp_path / "my-shapes.pt"
    shutil.copyfile(BUNDLED_MODEL, local)
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    state = ("--state-file", str(tmp_path / "uploads.json"))
    name = f"sent-{uuid.uuid4().hex[:6]}"
    added = yolo_jobs(api_url, admin_key.key, "--no-progress", "models", "add", name, "--weights", str(local), *state)
    assert added.returncode == EXIT_OK, added.stderr
    assert added.stdout == f"{name}\t\t\tactive\t\n"
    registered = model_named(api_url, admin_key, name)
    assert registered["weights"] == str(Path(storage.blobs.root) / "models" / f"{name}-{digest[:12]}.pt")

    submitted = post_job(api, api_url, [("shapes.png", image_bytes(96, 64, seed=2705))], model=name)
    assert submitted.status_code == 202, submitted.text
    job = wait_for_finished(storage, submitted.json()["job_id"], timeout=60)
    assert (job.status, job.model) == ("succeeded", name), job.error_message
    assert f"model loaded name={name} " in worker.log_text() and worker.running(), "loaded on its first job"
    shown = model_named(api_url, api_key, name)
    assert (shown["weights_sha256"], shown["classes"]) == (digest, {"0": "circle", "1": "square", "2": "triangle"})

    refused = yolo_jobs(api_url, api_key.key, "--no-progress", "upload", str(local), *state)
    assert refused.returncode != EXIT_OK and "(unsupported_media)" in refused.stderr, "not an admin's: media only"
    declared = {
        "Tus-Resumable": "1.0.0",
        "Upload-Length": str(local.stat().st_size),
        "Upload-Metadata": f"filename {base64.b64encode(b'my-shapes.pt').decode()},purpose "
        + base64.b64encode(b"weights").decode(),
    }
    forbidden = requests.post(f"{api_url}/api/v1/uploads", headers={**api_key.headers, **declared}, timeout=10)
    assert error_of(forbidden) == (403, "forbidden"), "weights are an admin's to send"


def test_a_fixed_size_export_runs_at_its_size_and_the_job_records_it(
    api_url: str,
    api: requests.Session,
    worker: ServiceProcess,
    admin_key: TestKey,
    api_key: TestKey,
    storage: Storage,
    fixed_export: Path,
) -> None:
    for detector in (
        load(choose(str(fixed_export), "cpu"), "cpu", 1),
        UltralyticsDetector(str(fixed_export), "cpu", 1),
    ):
        assert (detector.fixed_imgsz, detector.imgsz) == (320, 320), detector.backend
    assert load(choose(str(BUNDLED_MODEL), "cpu"), "cpu", 1).fixed_imgsz is None, "a dynamic export: the size asked"

    name = f"shapes320-{uuid.uuid4().hex[:6]}"
    body = {"name": name, "weights": str(fixed_export)}
    registered = requests.post(f"{api_url}{MODELS}", json=body, headers=admin_key.headers, timeout=10)
    assert registered.status_code == 201 and registered.headers["Location"].endswith(f"{MODELS}/{name}")
    first = post_job(api, api_url, [("shapes.png", image_bytes(160, 120, seed=2703))], model=name, imgsz="640")
    assert first.status_code == 202, first.text
    ran = wait_for_finished(storage, first.json()["job_id"], timeout=60)
    assert (ran.status, ran.imgsz) == ("succeeded", 320), "asked 640; a worker found the size on loading it"
    assert "job runs at its model's fixed size imgsz=320 asked=640" in worker.log_text()

    shown = model_named(api_url, api_key, name)
    assert (shown["fixed_imgsz"], shown["imgsz"]) == (320, 320)
    second = post_job(api, api_url, [("shapes.png", image_bytes(160, 120, seed=2704))], model=name, imgsz="1024")
    job_id = second.json()["job_id"]
    asked = api.get(f"{api_url}/api/v1/jobs/{job_id}", timeout=10).json()["parameters"]["imgsz"]
    assert asked == 320, "the API knows its size now: the job records it at once"
    assert wait_for_finished(storage, job_id, timeout=60).status == "succeeded"


def test_a_bad_registration_is_a_clear_4xx(
    api_url: str, admin_key: TestKey, api_key: TestKey, services_env: dict[str, str], coco_weights: Path
) -> None:
    root = Path(services_env["STORAGE_ROOT"])

    def register(**body: str) -> requests.Response:
        return requests.post(f"{api_url}{MODELS}", json=body, headers=admin_key.headers, timeout=10)

    taken = f"taken-{uuid.uuid4().hex[:6]}"
    assert register(name=taken, weights=str(coco_weights)).status_code == 201
    answers = {
        "outside the volume": register(name="x", weights=str(BUNDLED_MODEL.parents[1] / "setup.cfg")),
        "no such file": register(name="x", weights=str(root / "models" / "missing.pt")),
        "not weights": register(name="x", weights=str(root)),
        "a name in use": register(name=taken, weights=str(coco_weights)),
        "both sources": register(name="x", weights=str(coco_weights), file_id=str(uuid.uuid4())),
        "an unknown file": register(name="x", file_id=str(uuid.uuid4())),
        "a bad name": register(name="no spaces", weights=str(coco_weights)),
    }
    codes = {what: error_of(response) for what, response in answers.items()}
    assert codes == {
        "outside the volume": (422, "weights_not_allowed"),
        "no such file": (422, "weights_not_found"),
        "not weights": (422, "invalid_weights"),
        "a name in use": (409, "model_exists"),
        "both sources": (400, "invalid_parameter"),
        "an unknown file": (422, "unknown_file"),
        "a bad name": (400, "invalid_parameter"),
    }
    retire = f"{api_url}{MODELS}/{{}}/retire"
    assert error_of(requests.post(retire.format("shapes"), headers=admin_key.headers, timeout=10)) == (
        409,
        "configured_model",
    )
    assert error_of(requests.post(retire.format("nope"), headers=admin_key.headers, timeout=10)) == (404, "not_found")
    assert error_of(requests.post(retire.format(taken), headers=api_key.headers, timeout=10)) == (403, "forbidden")
    assert error_of(requests.get(f"{api_url}{MODELS}/nope", headers=api_key.headers, timeout=10)) == (404, "not_found")

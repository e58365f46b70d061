"""GET /api/v1/jobs/<id>/export: each format of a real job read back by its consumer's own reader, and the
answers for a bad format, an unfinished, cancelled or another tenant's job."""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from pycocotools.coco import COCO

from harness.images import image_bytes
from harness.processes import ServiceProcess
from tests.conftest import MakeApp
from tests.helpers import TestKey, app_key, submit
from training.shapes import CLASS_NAMES, render_sample
from yolo_jobs_client import Client


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four images of the bundled model's shapes, two of them uploaded under the same name."""
    folder = tmp_path_factory.mktemp("shapes")
    for index, name in enumerate(["one/same.png", "two/same.png", "three.png", "four.jpg"]):
        path = folder / name
        path.parent.mkdir(exist_ok=True)
        render_sample(seed=12, index=index)[0].save(path)
    return folder


@pytest.fixture(scope="module")
def finished_job(api_url: str, api_key: TestKey, worker: ServiceProcess, shapes_dir: Path) -> dict[str, Any]:
    """A succeeded job over the shapes, submitted and awaited with the Python client."""
    uploaded: list[int] = []
    with Client(api_url, api_key.key) as client:
        (job,) = client.submit([shapes_dir], on_upload=lambda sent, total: uploaded.append(sent))
        (finished,) = client.wait([job.job_id])
    assert finished["status"] == "succeeded", finished
    total = sum(path.stat().st_size for path in shapes_dir.rglob("*.*"))
    assert uploaded == sorted(uploaded) and uploaded[-1] == total, "upload progress only grows, to the total"
    assert sum(len(r["detections"]) for r in finished["results"]) >= 4, "the shapes model finds the shapes"
    return finished


def export(api: requests.Session, api_url: str, job_id: str, **params: str) -> requests.Response:
    return api.get(f"{api_url}/api/v1/jobs/{job_id}/export", params=params, timeout=30)


def detections(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for result in job["results"] for d in result["detections"]]


def test_coco_loads_in_pycocotools(
    api: requests.Session, api_url: str, finished_job: dict[str, Any], tmp_path: Path
) -> None:
    response = export(api, api_url, finished_job["job_id"], format="coco")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    assert response.headers["Content-Disposition"].startswith("attachment")
    (tmp_path / "coco.json").write_bytes(response.content)
    coco = COCO(str(tmp_path / "coco.json"))
    images = coco.loadImgs(coco.getImgIds())
    assert sorted(i["file_name"] for i in images) == ["four.jpg", "same.png", "same.png", "three.png"]
    sizes = {r["file_id"]: (r["width"], r["height"]) for r in finished_job["results"]}
    assert all(sizes[i["file_id"]] == (i["width"], i["height"]) for i in images)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASS_NAMES)
    annotations = coco.loadAnns(coco.getAnnIds())
    assert len(annotations) == len(detections(finished_job))
    first = detections(finished_job)[0]
    box = first["box"]
    assert annotations[0]["bbox"] == pytest.approx([box["x1"], box["y1"], box["x2"] - box["x1"], box["y2"] - box["y1"]])
    assert annotations[0]["score"] == first["confidence"] and annotations[0]["category_id"] == first["class"] + 1


def test_yolo_labels_pass_ultralytics_own_checks(
    api: requests.Session, api_url: str, finished_job: dict[str, Any], shapes_dir: Path, tmp_path: Path
) -> None:
    from ultralytics.data.utils import check_det_dataset, verify_image_label

    response = export(api, api_url, finished_job["job_id"], format="yolo")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(response.content)).extractall(tmp_path)
    (tmp_path / "images").mkdir()
    sources = {"four.jpg": [shapes_dir / "four.jpg"], "three.png": [shapes_dir / "three.png"]}
    sources["same.png"] = [shapes_dir / "one/same.png", shapes_dir / "two/same.png"]  # in upload order
    rows = list(csv.DictReader(io.StringIO((tmp_path / "files.csv").read_text())))
    assert sorted(row["label"] for row in rows) == [
        "labels/four.txt",
        "labels/same-2.txt",
        "labels/same.txt",
        "labels/three.txt",
    ]
    data = check_det_dataset(str(tmp_path / "data.yaml"), autodownload=False)
    assert data["names"] == dict(enumerate(CLASS_NAMES))
    found = 0
    for row in rows:
        image = tmp_path / "images" / (Path(row["label"]).stem + Path(row["filename"]).suffix)
        shutil.copy(sources[row["filename"]].pop(0), image)
        checked = verify_image_label(
            (str(image), str(tmp_path / row["label"]), "", False, len(CLASS_NAMES), 0, 0, False)
        )
        _, labels, shape, *_, corrupt, message = checked
        assert corrupt == 0, message
        assert shape == (int(row["height"]), int(row["width"]))
        found += len(labels)
    assert found == len(detections(finished_job))
    with_conf = zipfile.ZipFile(
        io.BytesIO(export(api, api_url, finished_job["job_id"], format="yolo", confidence="true").content)
    )
    assert all(len(line.split()) == 6 for line in with_conf.read("labels/three.txt").decode().splitlines())


def test_csv_and_label_studio(api: requests.Session, api_url: str, finished_job: dict[str, Any]) -> None:
    rows = list(csv.DictReader(io.StringIO(export(api, api_url, finished_job["job_id"], format="csv").text)))
    assert [(r["name"], float(r["confidence"])) for r in rows] == [
        (d["name"], d["confidence"]) for d in detections(finished_job)
    ]
    assert {r["job"] for r in rows} == {finished_job["job_id"]}
    tasks = json.loads(export(api, api_url, finished_job["job_id"], format="labelstudio").content)
    assert len(tasks) == 4
    for task, result in zip(tasks, finished_job["results"], strict=True):
        content = requests.get(task["data"]["image"], timeout=10)  # no key: Label Studio sends none
        assert content.status_code == 200 and content.content[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0")
        regions = task["predictions"][0]["result"]
        assert len(regions) == len(result["detections"])
        for region, detection in zip(regions, result["detections"], strict=True):
            value = region["value"]
            assert region["type"] == "rectanglelabels" and value["rectanglelabels"] == [detection["name"]]
            assert (region["original_width"], region["original_height"]) == (result["width"], result["height"])
            assert value["x"] == pytest.approx(detection["box"]["x1"] / result["width"] * 100, abs=1e-3)
            assert 0 <= value["x"] + value["width"] <= 100.01 and 0 <= value["y"] + value["height"] <= 100.01


def error(response: Any) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


def test_unknown_format_unfinished_cancelled_and_another_tenants_job(
    make_app: MakeApp, isolated_env: dict[str, str]
) -> None:
    app: Flask = make_app(isolated_env)  # no worker consumes this vhost: the job stays queued
    client = app.test_client()
    job_id = submit(app, [image_bytes(seed=9300), image_bytes(seed=9301)])
    path = f"/api/v1/jobs/{job_id}/export"
    assert error(client.get(path, query_string={"format": "voc"})) == (400, "invalid_parameter")
    assert error(client.get(path)) == (400, "invalid_parameter")
    assert error(client.get(path, query_string={"format": "csv", "partial": "maybe"})) == (400, "invalid_parameter")
    unfinished = client.get(path, query_string={"format": "coco"})
    assert error(unfinished) == (409, "not_finished") and int(unfinished.headers["Retry-After"]) > 0
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    assert error(client.get(path, query_string={"format": "coco"})) == (409, "not_succeeded")
    with client.get(path, query_string={"format": "coco", "partial": "true"}) as partial:  # streamed: closed after
        assert partial.status_code == 200 and partial.get_json()["images"] == []
        assert partial.get_json()["info"]["status"] == "cancelled"
    stranger = app.test_client(key=app_key(app, "someone-else"))
    assert error(stranger.get(path, query_string={"format": "coco"})) == (404, "not_found")
    assert error(client.get(f"/api/v1/jobs/{job_id[:-1]}x/export?format=coco")) == (404, "not_found")

"""The bundled model holds up: on data it never saw, through the whole system, and on its own held-out data.

One job carries the independent evaluation set (``evaluation/scenes.py``, drawn by
code that training never imports; shapes cut by the border are labelled by its
convention, the ambiguous ones as ignore regions) and the shape-free photos
Ultralytics ships; it goes through the real API and worker at the default conf 0.25. Ultralytics' own validation
scores the held-out sets of both training generators, run in a network namespace with
no route anywhere and with its settings in a folder of the test's own, so any reach
for the network fails. The model card (models/shapes-yolov8n.md) reports the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from config.paths import BUNDLED_MODEL, PROJECT_ROOT
from evaluation.matching import MatchStats, match
from evaluation.scenes import Truth, render
from harness.processes import ServiceProcess
from tests.helpers import post_job, wait_for_job
from training.scenes import render_scene
from training.shapes import render_sample, write_dataset
from training.train import STAGES

pytestmark = pytest.mark.slow
# Held-out seeds of the two training generators (training/train.py trains on others).
HELD_OUT = {"scenes": (render_scene, 13, 150), "shapes": (render_sample, 3, 100)}
# (mAP50, mAP50-95) each must reach: the 0.99 on the clean generator the model was first trained on;
# on the harder scenes (occluded, tiny and low-contrast shapes among clutter) a guard below what the shipped
# model scores (models/shapes-yolov8n.md).
HELD_OUT_BARS = {"shapes": (0.99, 0.85), "scenes": (0.90, 0.75)}
EVAL_SEED = 1
TRAINED_SIZE = list(STAGES.values())[-1].imgsz  # the size the last stage trains at: the model's own
EVAL_IMAGES = 90  # about 240 objects; a job takes at most 100 files
SHAPE_FREE_PHOTOS = ("bus.jpg", "zidane.jpg")

# Ultralytics writes a validation's run folder beside its own package while pytest runs (its tests'
# folder, inside site-packages), whatever its settings say: the script names the folder itself.
OFFLINE_SCRIPT = """
import json, os, sys
from config import Settings
from config.ultralytics import configure_ultralytics
configure_ultralytics(Settings.from_env().worker)
attempts = []
NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo")
sys.addaudithook(lambda event, args: attempts.append(event) if event in NETWORK_EVENTS else None)
from ultralytics import YOLO
model = YOLO(sys.argv[1])
scores = {}
for data in sys.argv[2:]:
    # At the model's own input size, as a job runs it by default.
    metrics = model.val(
        data=data, split="test", batch=16, device="cpu", plots=False, verbose=False, workers=0,
        project=os.environ["VAL_RUNS"],
    )
    scores[data] = {"map50": metrics.box.map50, "map": metrics.box.map}
print("RESULT " + json.dumps({"scores": scores, "network": attempts}))
"""


def run_offline(script: str, *args: str, env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", script, *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_held_out_validation_meets_the_bar_offline(tmp_path: Path, services_env: dict[str, str]) -> None:
    data_yamls = {
        name: str(write_dataset(tmp_path / name, {"test": (seed, count)}, render))
        for name, (render, seed, count) in HELD_OUT.items()
    }
    config_dir = tmp_path / "ultralytics-config"
    env = {**services_env, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(config_dir), "VAL_RUNS": str(tmp_path / "runs")}
    result = run_offline(OFFLINE_SCRIPT, str(BUNDLED_MODEL), *data_yamls.values(), env=env)
    assert result["network"] == [], "Ultralytics tried to reach the network"
    assert (config_dir / "Ultralytics" / "settings.json").is_file(), "Ultralytics settings must live in YOLO_CONFIG_DIR"
    scores = {name: result["scores"][data_yaml] for name, data_yaml in data_yamls.items()}
    for name, (_render, seed, count) in HELD_OUT.items():
        print(f"\nheld-out {name} seed {seed}, {count} images: ", end="")
        print(f"mAP50={scores[name]['map50']:.4f} mAP50-95={scores[name]['map']:.4f}")
    for name, (map50, map50_95) in HELD_OUT_BARS.items():
        assert scores[name]["map50"] >= map50 and scores[name]["map"] >= map50_95, name


@pytest.fixture(scope="module")
def evaluation_job(
    api: requests.Session, api_url: str, worker: ServiceProcess
) -> tuple[dict[str, Any], list[list[Truth]]]:
    """One job through the API and worker: the independent set, then the shape-free photos; its JSON and truth."""
    import ultralytics

    truths: list[list[Truth]] = []
    files = []
    for index in range(EVAL_IMAGES):
        data, _width, _height, image_truths = render(EVAL_SEED, index)
        files.append((f"eval-{index:03d}.jpg", data))
        truths.append(image_truths)
    assets = Path(ultralytics.__file__).parent / "assets"
    files += [(name, (assets / name).read_bytes()) for name in SHAPE_FREE_PHOTOS]
    response = post_job(api, api_url, files)
    assert response.status_code == 202, response.text
    job = wait_for_job(api_url, response.json()["job_id"], timeout=300, headers=api.headers)
    assert job["status"] == "succeeded", job
    # The defaults: conf 0.25 and the size the model was trained at, which the job records once a worker
    # has reported the model (none before: the worker then runs it at that size all the same).
    assert job["parameters"]["conf"] == 0.25 and job["parameters"]["imgsz"] in (None, TRAINED_SIZE)
    assert [result["filename"] for result in job["results"]] == [name for name, _ in files]
    assert all(result["error"] is None for result in job["results"]), job["results"]
    assert [(r["width"], r["height"]) for r in job["results"][EVAL_IMAGES:]] == [(810, 1080), (1280, 720)]
    return job, truths


def test_the_independent_set_is_found_with_few_false_boxes(
    evaluation_job: tuple[dict[str, Any], list[list[Truth]]],
) -> None:
    job, truths = evaluation_job
    stats = MatchStats()
    for image_truths, result in zip(truths, job["results"][:EVAL_IMAGES], strict=True):
        stats.add(match(image_truths, result["detections"]))
    print(f"\nindependent set seed {EVAL_SEED}, {EVAL_IMAGES} images, through the system: {stats}")
    assert stats.objects >= 200
    assert stats.found_rate >= 0.97
    assert stats.false_per_object <= 0.03


def test_shape_free_photos_get_no_boxes(evaluation_job: tuple[dict[str, Any], list[list[Truth]]]) -> None:
    job, _truths = evaluation_job
    for result in job["results"][EVAL_IMAGES:]:
        boxes = [(d["name"], d["confidence"]) for d in result["detections"]]
        print(f"\n{result['filename']}: {len(boxes)} boxes {boxes}")
        assert boxes == [], f"{result['filename']}: {boxes}"

"""The bundled model really detects shapes: Ultralytics' validation on held-out data, and end to end.

Ultralytics runs here in a network namespace with no route anywhere, with its
settings in a folder of the test's own, so any reach for the network fails.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from config.paths import BUNDLED_MODEL, PROJECT_ROOT
from harness.processes import ServiceProcess
from tests.helpers import post_job, wait_for_job
from training.evaluate import MatchStats, match
from training.shapes import render_sample, write_dataset

pytestmark = pytest.mark.slow
HELD_OUT_SEED = 3
HELD_OUT_IMAGES = 200
E2E_SEED = 4
E2E_IMAGES = 40

OFFLINE_SCRIPT = """
import json, sys
from config import Settings
from config.ultralytics import configure_ultralytics
configure_ultralytics(Settings.from_env().worker)
attempts = []
NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo")
sys.addaudithook(lambda event, args: attempts.append(event) if event in NETWORK_EVENTS else None)
from ultralytics import YOLO
metrics = YOLO(sys.argv[1]).val(data=sys.argv[2], split="test", imgsz=320, batch=16, device="cpu",
                                plots=False, verbose=False, workers=0)
print("RESULT " + json.dumps({"map50": metrics.box.map50, "map": metrics.box.map, "network": attempts}))
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
    data_yaml = write_dataset(tmp_path / "held-out", {"test": (HELD_OUT_SEED, HELD_OUT_IMAGES)})
    config_dir = tmp_path / "ultralytics-config"
    env = {**services_env, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(config_dir)}
    metrics = run_offline(OFFLINE_SCRIPT, str(BUNDLED_MODEL), str(data_yaml), env=env)
    scores = f"mAP50={metrics['map50']:.4f} mAP50-95={metrics['map']:.4f}"
    print(f"\nheld-out seed {HELD_OUT_SEED}, {HELD_OUT_IMAGES} images: {scores}")
    assert metrics["network"] == [], "Ultralytics tried to reach the network"
    assert (config_dir / "Ultralytics" / "settings.json").is_file(), "Ultralytics settings must live in YOLO_CONFIG_DIR"
    assert metrics["map50"] >= 0.95
    assert metrics["map"] >= 0.80


def test_shapes_come_back_matching_ground_truth_end_to_end(
    api: requests.Session, api_url: str, worker: ServiceProcess
) -> None:
    samples = [render_sample(E2E_SEED, index) for index in range(E2E_IMAGES)]
    files = []
    for index, (image, _) in enumerate(samples):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        files.append((f"shapes-{index}.png", buffer.getvalue()))
    response = post_job(api, api_url, files)
    assert response.status_code == 202, response.text
    job = wait_for_job(api_url, response.json()["job_id"], timeout=300, headers=api.headers)
    assert job["status"] == "succeeded", job
    stats = MatchStats()
    for (image, truth), result in zip(samples, job["results"], strict=True):
        assert (result["width"], result["height"]) == image.size
        stats.add(match(truth, result["detections"]))
    print(
        f"\nend to end: {stats.matched}/{stats.objects} objects matched ({stats.match_rate:.1%}), "
        f"{stats.detections - stats.matched}/{stats.detections} extra boxes ({stats.extra_rate:.1%})"
    )
    assert stats.objects >= 100
    assert stats.match_rate >= 0.95
    assert stats.extra_rate <= 0.05


def test_a_real_photograph_goes_through_the_pipeline(
    api: requests.Session, api_url: str, worker: ServiceProcess
) -> None:
    import ultralytics

    bus = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    response = post_job(api, api_url, [("bus.jpg", bus.read_bytes())])
    assert response.status_code == 202, response.text
    job = wait_for_job(api_url, response.json()["job_id"], headers=api.headers)
    assert job["status"] == "succeeded", job
    (result,) = job["results"]
    assert (result["width"], result["height"]) == (810, 1080) and result["error"] is None

"""The API process never imports torch or ultralytics (nor the worker's ``tasks`` package)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from config.paths import PROJECT_ROOT
from harness.images import image_bytes
from tests.helpers import post_job

FORBIDDEN = ("torch", "ultralytics", "tasks", "cv2")

SCRIPT = f"""
import io, sys
from accounts.keys import create_key
from app import create_app
app = create_app(TESTING=True)
with app.extensions["yolo_jobs"].storage.database.transaction() as session:
    key = create_key(session, "test", label="imports test")
client = app.test_client()
client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + key
response = client.post("/api/v1/jobs", data={{"image": [(io.BytesIO({image_bytes()!r}), "a.png")]}},
                       content_type="multipart/form-data")
assert response.status_code == 202, response.get_data(as_text=True)
job_id = response.get_json()["job_id"]
for path in (f"/api/v1/jobs/{{job_id}}", "/api/v1/jobs", "/readyz", "/healthz"):
    assert client.get(path).status_code == 200, path
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({FORBIDDEN!r}))
print("LOADED", loaded)
"""


def test_api_process_imports_no_torch(isolated_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=isolated_env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout


def gunicorn_worker_pids(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_running_gunicorn_has_no_torch_mapped(api: requests.Session, api_url: str) -> None:
    assert post_job(api, api_url, [("a.png", image_bytes(seed=71))]).status_code == 202
    port = api_url.rsplit(":", 1)[1]
    masters = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and f"127.0.0.1:{port}".encode() in _environ(p)
        and b"gunicorn" in (p / "cmdline").read_bytes()
    ]
    assert masters, "gunicorn process not found"
    for pid in masters:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "libtorch" not in maps and "torch/lib" not in maps and "cv2" not in maps


def _environ(proc: Path) -> bytes:
    try:
        return (proc / "environ").read_bytes()
    except OSError:
        return b""

"""The ``yolo-jobs`` command against a real gunicorn and Celery worker: a folder of more than one job's
worth of images, a 503 after the job was made that a retry must not turn into two jobs, and exit codes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from pycocotools.coco import COCO

from app.forms import MAX_FILES_PER_JOB
from harness.images import image_bytes
from harness.processes import ServiceProcess
from storage import Storage
from tests.functional.cli_support import yolo_jobs
from tests.helpers import TestKey, add_key
from yolo_jobs_client.errors import EXIT_AUTH, EXIT_CONFLICT, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE

JOBS_PATH = "/api/v1/jobs"


@pytest.fixture()
def tenant_key(storage: Storage) -> TestKey:
    """A key of a tenant of this test's own, so its job list holds only what the test made."""
    return add_key(storage, f"cli-{uuid.uuid4().hex[:8]}")


def job_total(api_url: str, key: TestKey) -> int:
    return int(requests.get(f"{api_url}{JOBS_PATH}", headers=key.headers, timeout=10).json()["total"])


def test_a_large_folder_becomes_several_jobs_and_one_coco_file(
    api_url: str, worker: ServiceProcess, tenant_key: TestKey, tmp_path: Path
) -> None:
    count = MAX_FILES_PER_JOB + 20
    for n in range(count):
        folder = tmp_path / "photos" / f"part-{n % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{n:03}.png").write_bytes(image_bytes(32, 24, seed=20_000 + n))
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    out = tmp_path / "out" / "all.json"
    started = time.monotonic()
    result = yolo_jobs(
        api_url,
        tenant_key.key,
        "submit",
        str(tmp_path / "photos"),
        "--imgsz",
        "64",
        "--export",
        "coco",
        "--out",
        str(out),
    )
    assert result.returncode == EXIT_OK, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    made, finished = lines[:2], lines[2:]
    assert [line[1:] for line in made] == [["queued", f"{MAX_FILES_PER_JOB} files"], ["queued", "20 files"]]
    assert [(line[0], line[1]) for line in finished] == [(line[0], "succeeded") for line in made]
    assert job_total(api_url, tenant_key) == 2
    coco = COCO(str(out))
    assert len(coco.getImgIds()) == count
    assert sorted(image["file_name"] for image in coco.dataset["images"]) == [f"{n:03}.png" for n in range(count)]
    assert coco.dataset["info"]["job_ids"] == [line[0] for line in made]
    print(f"\n{count} images through the CLI in {time.monotonic() - started:.1f} s")


@dataclass
class FlakyProxy:
    """A real HTTP proxy in front of the API that loses the answer to the first job submission: it forwards
    the POST (the job is made) and answers the client 503 with ``Retry-After: 1`` instead."""

    upstream: str
    posts: list[tuple[float, str, int, str | None]] = field(default_factory=list)  # time, key, status, replayed
    server: ThreadingHTTPServer | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.forward()

            def do_POST(self) -> None:
                self.forward()

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = requests.request(
                    self.command, proxy.upstream + self.path, headers=headers, data=body, timeout=60
                )
                status, content = answer.status_code, answer.content
                reply_headers = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "location")}
                if self.command == "POST" and self.path == JOBS_PATH:
                    key = self.headers["Idempotency-Key"]
                    proxy.posts.append((time.monotonic(), key, status, answer.headers.get("Idempotent-Replayed")))
                    if len(proxy.posts) == 1:
                        status, reply_headers = 503, {"Content-Type": "application/json", "Retry-After": "1"}
                        content = b'{"error": {"code": "unavailable", "message": "the answer was lost"}}'
                self.send_response(status)
                for name, value in reply_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> str:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


def test_a_lost_answer_is_retried_under_the_same_key_without_a_second_job(
    api_url: str, tenant_key: TestKey, tmp_path: Path
) -> None:
    for n in range(3):
        (tmp_path / f"{n}.png").write_bytes(image_bytes(32, 24, seed=30_000 + n))
    flaky = FlakyProxy(api_url)
    with flaky as proxy_url:
        result = yolo_jobs(proxy_url, tenant_key.key, "submit", str(tmp_path))
    assert result.returncode == EXIT_OK, result.stderr
    (first, second) = flaky.posts
    assert first[1] == second[1], "the retry carries the chunk's Idempotency-Key"
    assert (first[2], first[3], second[2], second[3]) == (202, None, 202, "true")
    assert second[0] - first[0] >= 1, "Retry-After: 1 was honoured"
    job_id = result.stdout.split("\t")[0]
    jobs = requests.get(f"{api_url}{JOBS_PATH}", headers=tenant_key.headers, timeout=10).json()
    assert (jobs["total"], jobs["jobs"][0]["job_id"]) == (1, job_id), "one job, the one the CLI reported"


def test_exit_codes(api_url: str, worker: ServiceProcess, tenant_key: TestKey, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes(32, 24, seed=31_000))
    (tmp_path / "fake.jpg").write_text("not really a JPEG")
    key = tenant_key.key
    assert yolo_jobs(api_url, None, "jobs").returncode == EXIT_AUTH
    assert yolo_jobs(api_url, "yj_00000000_" + "x" * 43, "jobs").returncode == EXIT_AUTH
    assert yolo_jobs(api_url, key, "status", str(uuid.uuid4())).returncode == EXIT_NOT_FOUND
    assert yolo_jobs(api_url, key, "submit", str(tmp_path / "missing")).returncode == EXIT_USAGE
    assert yolo_jobs(api_url, key, "submit", str(tmp_path), "--conf", "7").returncode == EXIT_USAGE
    rejected = yolo_jobs(api_url, key, "submit", str(tmp_path / "fake.jpg"))
    assert rejected.returncode == EXIT_USAGE and "unsupported_media" in rejected.stderr
    assert yolo_jobs(api_url, key, "export", "x", "--format", "voc", "--out", "x").returncode == EXIT_USAGE
    submitted = yolo_jobs(api_url, key, "submit", str(tmp_path / "a.png"), "--imgsz", "64", "--wait")
    assert submitted.returncode == EXIT_OK, submitted.stderr
    job_id = submitted.stdout.split("\t")[0]
    status = yolo_jobs(api_url, key, "status", job_id)
    assert status.returncode == EXIT_OK and json.loads(status.stdout)["status"] == "succeeded"
    cancel = yolo_jobs(api_url, key, "cancel", job_id)
    assert cancel.returncode == EXIT_CONFLICT and "already_finished" in cancel.stderr
    assert yolo_jobs(api_url, key, "retry", job_id).returncode == EXIT_CONFLICT
    out = tmp_path / "one.csv"
    assert yolo_jobs(api_url, key, "export", job_id, "--format", "csv", "--out", str(out)).returncode == EXIT_OK
    assert out.read_text().startswith("job,file,filename,class,name,confidence,x1,y1,x2,y2,width,height")
    listing = yolo_jobs(api_url, key, "jobs")
    assert listing.returncode == EXIT_OK and listing.stdout.split("\t")[:3] == [job_id, "succeeded", "1/1"]
    models = yolo_jobs(api_url, key, "models")
    assert models.returncode == EXIT_OK and models.stdout.startswith("shapes\tdefault\tcircle,square,triangle")

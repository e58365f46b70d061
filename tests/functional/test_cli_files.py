"""The ``yolo-jobs`` command with stored files, against a real gunicorn and Celery worker: a large file sent
by tus survives a SIGKILL half-way (the next run sends only the rest) and a connection cut mid-request (the
same run resumes), and ends with the source's SHA-256; the server's refusals are said and leave nothing to
resume; stored files make jobs, a job runs again, and jobs and files are deleted."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import requests

from config.paths import PROJECT_ROOT
from harness.images import image_bytes
from harness.processes import ServiceProcess, wait_until
from storage import Storage
from storage.tables import ResumableUpload
from tests.functional.cli_support import cli_argv, cli_env, yolo_jobs
from tests.functional.relay_support import Relay
from tests.helpers import TestKey, add_key
from tests.unit.storage.test_media import padded_image
from yolo_jobs_client.errors import EXIT_AUTH, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from yolo_jobs_client.tus import VersionFingerprint, open_state

MIB = 2**20
SIZE = 32 * MIB
CHUNK = MIB
# What a run sends besides the file's bytes: each request's headers, and at most one chunk sent twice.
WIRE_SLACK = CHUNK + 256 * 1024


def large_file(path: Path, size: int = SIZE) -> str:
    """Write ``size`` bytes to ``path`` a MiB at a time: a PNG (all a stored file is identified by), then random
    bytes; their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for index in range(size // MIB):
            block = padded_image(MIB, seed=index) if index == 0 else os.urandom(MIB)
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def stored_line(stdout: str) -> list[str]:
    """The one ``file_id, sha256, path`` line an upload of one file prints."""
    (line,) = stdout.splitlines()
    return line.split("\t")


def stored_urls(state_file: Path) -> list[str]:
    """The upload URLs the state file keeps (tuspy's FileStorage: a TinyDB document)."""
    try:
        rows = json.loads(state_file.read_text() or "{}").get("_default", {}).values()
    except (OSError, ValueError):  # not written yet, or being written
        return []
    return [row["url"] for row in rows if row.get("url")]


def upload_of(api_url: str, key: TestKey, file_id: str, upload_url: str) -> dict[str, object]:
    answer = requests.get(f"{api_url}/api/v1/uploads/{upload_url.rsplit('/', 1)[-1]}", headers=key.headers, timeout=10)
    assert answer.status_code == 200, answer.text
    body = dict(answer.json())
    assert body["file_id"] == file_id
    return body


def test_an_upload_killed_half_way_resumes_with_the_rest_only(api_url: str, storage: Storage, tmp_path: Path) -> None:
    key = add_key(storage, f"cli-files-{uuid.uuid4().hex[:8]}")
    source, state = tmp_path / "big.bin", tmp_path / "state" / "uploads.json"
    sha256 = large_file(source)
    args = ("--no-progress", "upload", str(source), "--state-file", str(state), "--chunk-size", str(CHUNK))

    # One relay for both runs: the state file keeps uploads per server URL (and key).
    relay = Relay(api_url, rate=16 * MIB)  # about 2 s for the whole file
    with relay as relay_url:
        first = subprocess.Popen(
            cli_argv(*args),
            env=cli_env(relay_url, key.key),
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        wait_until(lambda: relay.sent >= SIZE // 2 or first.poll() is not None, timeout=60, interval=0.01)
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=10)
        assert first.returncode == -signal.SIGKILL, "killed, not finished"
        wait_until(lambda: relay.open_connections == 0, timeout=30, interval=0.05, what="the killed run's last bytes")
        first_sent = relay.sent
        assert first_sent < SIZE
        (upload_url,) = stored_urls(state)

        relay.rate = None
        second = yolo_jobs(relay_url, key.key, *args)
    assert second.returncode == EXIT_OK, second.stderr
    resumed = re.search(rf"resuming {re.escape(str(source))} at (\d+) of {SIZE} bytes", second.stderr)
    assert resumed, second.stderr
    held = int(resumed[1])
    assert SIZE // 4 < held <= first_sent, "the server kept what the first run sent"
    assert relay.sent - first_sent < SIZE - held + WIRE_SLACK, "the second run sent only the rest"

    file_id, printed_sha256, path = stored_line(second.stdout)
    assert (printed_sha256, path) == (sha256, str(source))
    upload = upload_of(api_url, key, file_id, upload_url)
    assert (upload["sha256"], upload["size"], upload["offset"]) == (sha256, SIZE, SIZE)
    assert stored_urls(state) == [], "a finished upload leaves the state file"


def test_a_connection_cut_mid_request_is_resumed_by_the_same_run(
    api_url: str, storage: Storage, tmp_path: Path
) -> None:
    key = add_key(storage, f"cli-files-{uuid.uuid4().hex[:8]}")
    source, state = tmp_path / "cut.bin", tmp_path / "uploads.json"
    sha256 = large_file(source, 8 * MIB)
    dropping = Relay(api_url, cut_at=3 * MIB + 12345)  # inside the fourth PATCH
    with dropping as relay_url:
        args = ("upload", str(source), "--state-file", str(state), "--chunk-size", "1M", "--checksum")
        result = yolo_jobs(relay_url, key.key, *args)
    assert result.returncode == EXIT_OK, result.stderr
    assert dropping.cuts == 1
    assert dropping.sent < 8 * MIB + WIRE_SLACK, "resumed from the server's offset, not from zero"
    file_id, stored_sha256, _ = stored_line(result.stdout)  # what GET /api/v1/uploads/<id> said the server stored
    assert stored_sha256 == sha256
    stored = requests.get(f"{api_url}/api/v1/files/{file_id}", headers=key.headers, timeout=10)
    assert stored.status_code == 200 and stored.json()["sha256"] == sha256, stored.text


def test_stored_files_make_jobs_that_run_again_and_are_deleted(
    api_url: str, worker: ServiceProcess, storage: Storage, tmp_path: Path
) -> None:
    key = add_key(storage, f"cli-files-{uuid.uuid4().hex[:8]}")
    images = []
    for n in range(3):
        images.append(tmp_path / f"{n}.png")
        images[-1].write_bytes(image_bytes(32, 24, seed=32_000 + n))
    state = ("--state-file", str(tmp_path / "uploads.json"))
    uploaded = yolo_jobs(api_url, key.key, "upload", str(images[0]), str(images[1]), *state)
    assert uploaded.returncode == EXIT_OK, uploaded.stderr
    lines = [line.split("\t") for line in uploaded.stdout.splitlines()]
    assert [(line[1], line[2]) for line in lines] == [
        (hashlib.sha256(path.read_bytes()).hexdigest(), str(path)) for path in images[:2]
    ]
    first, second = (line[0] for line in lines)

    on_files = yolo_jobs(api_url, key.key, "submit", "--file-id", first, "--file-id", second, "--imgsz", "64", "--wait")
    assert on_files.returncode == EXIT_OK, on_files.stderr
    made, finished = (line.split("\t") for line in on_files.stdout.splitlines())
    assert made[1:] == ["queued", "2 files"] and finished == [made[0], "succeeded", "2/2"]
    job = requests.get(f"{api_url}/api/v1/jobs/{made[0]}", headers=key.headers, timeout=10).json()
    assert [file["file_id"] for file in job["files"]] == [first, second]

    mixed = yolo_jobs(api_url, key.key, "submit", str(images[2]), "--file-id", first, "--imgsz", "64")
    assert mixed.returncode == EXIT_OK, mixed.stderr
    mixed_id, _, count = mixed.stdout.strip().split("\t")
    assert count == "2 files"
    mixed_job = requests.get(f"{api_url}/api/v1/jobs/{mixed_id}", headers=key.headers, timeout=10).json()
    image_part, reference = mixed_job["files"]
    assert (image_part["filename"], reference["file_id"]) == ("2.png", first), "images first, then the references"

    rerun = yolo_jobs(api_url, key.key, "rerun", made[0], "--imgsz", "96", "--conf", "0.3", "--wait")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    again, again_finished = (line.split("\t") for line in rerun.stdout.splitlines())
    assert again[0] != made[0] and again[1:] == ["queued", "2 files"]
    assert again_finished == [again[0], "succeeded", "2/2"]
    rerun_job = requests.get(f"{api_url}/api/v1/jobs/{again[0]}", headers=key.headers, timeout=10).json()
    assert [file["file_id"] for file in rerun_job["files"]] == [first, second], "the same files, no byte sent"
    assert (rerun_job["parameters"]["imgsz"], rerun_job["parameters"]["conf"]) == (96, 0.3)

    deleted = yolo_jobs(api_url, key.key, "delete", "job", again[0])
    assert deleted.returncode == EXIT_OK, deleted.stderr
    assert yolo_jobs(api_url, key.key, "status", again[0]).returncode == EXIT_NOT_FOUND
    assert yolo_jobs(api_url, key.key, "delete", "job", again[0]).returncode == EXIT_NOT_FOUND

    assert yolo_jobs(api_url, key.key, "delete", "file", second).returncode == EXIT_OK
    gone = yolo_jobs(api_url, key.key, "delete", "file", second)
    assert gone.returncode == EXIT_NOT_FOUND, gone.stderr
    refused = yolo_jobs(api_url, key.key, "submit", "--file-id", second)
    assert refused.returncode == EXIT_USAGE and "unknown_file" in refused.stderr, refused.stderr

    stranger = add_key(storage, f"cli-files-{uuid.uuid4().hex[:8]}")
    assert yolo_jobs(api_url, stranger.key, "rerun", made[0]).returncode == EXIT_NOT_FOUND
    assert yolo_jobs(api_url, stranger.key, "delete", "file", first).returncode == EXIT_NOT_FOUND


# Runs the command as ``python -m yolo_jobs_client`` would, then writes its peak RSS (KiB) to argv[1].
PEAK_RSS = """import resource, runpy, sys
out = sys.argv.pop(1)
try:
    runpy.run_module("yolo_jobs_client", run_name="__main__", alter_sys=True)
finally:
    with open(out, "w") as rss:
        rss.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def test_an_upload_holds_a_chunk_in_memory_never_the_file(api_url: str, storage: Storage, tmp_path: Path) -> None:
    key = add_key(storage, f"cli-files-{uuid.uuid4().hex[:8]}")

    def peak_kib(size: int) -> int:
        source, out = tmp_path / f"{size}.bin", tmp_path / f"{size}.rss"
        large_file(source, size)
        argv = [sys.executable, "-c", PEAK_RSS, str(out), "upload", str(source), "--chunk-size", "2M"]
        argv += ["--state-file", str(tmp_path / "uploads.json")]
        result = subprocess.run(argv, env=cli_env(api_url, key.key), capture_output=True, text=True, timeout=120)
        assert result.returncode == EXIT_OK, result.stderr
        return int(out.read_text())

    small, large = peak_kib(MIB), peak_kib(64 * MIB)
    assert large - small < 16 * 1024, f"{small} KiB for 1 MiB, {large} KiB for 64 MiB"


def test_an_upload_says_what_the_server_refused_and_keeps_nothing(
    api_url: str, storage: Storage, tmp_path: Path
) -> None:
    key = add_key(storage, f"cli-files-{uuid.uuid4().hex[:8]}")
    state = tmp_path / "uploads.json"
    options = requests.options(f"{api_url}/api/v1/uploads", timeout=10)
    too_large = tmp_path / "too-large.bin"
    with too_large.open("wb") as sparse:  # no block written: it costs no disk
        sparse.truncate(int(options.headers["Tus-Max-Size"]) + 1)
    refused = yolo_jobs(api_url, key.key, "upload", str(too_large), "--state-file", str(state))
    assert refused.returncode == EXIT_USAGE and "(too_large)" in refused.stderr, refused.stderr
    assert stored_urls(state) == []

    missing = yolo_jobs(api_url, key.key, "upload", str(tmp_path / "missing.bin"), "--state-file", str(state))
    assert missing.returncode == EXIT_USAGE and "no such file" in missing.stderr
    empty = tmp_path / "empty.bin"
    empty.touch()
    assert (
        yolo_jobs(api_url, "yj_00000000_" + "x" * 43, "upload", str(empty), "--state-file", str(state)).returncode
        == EXIT_AUTH
    )
    neither = yolo_jobs(api_url, key.key, "upload", str(empty), "--state-file", str(state))
    assert neither.returncode == EXIT_USAGE and "(unsupported_media)" in neither.stderr, neither.stderr
    assert stored_urls(state) == []


def test_an_upload_whose_bytes_all_arrived_but_were_not_stored_is_stored_by_the_next_run(
    api_url: str, storage: Storage, tmp_path: Path
) -> None:
    """The API died between the last byte and storing the file: the upload holds every byte and no file. The next
    run of the same command sends the empty piece at the end that has the server store them."""
    key = add_key(storage, f"cli-files-{uuid.uuid4().hex[:8]}")
    source, state = tmp_path / "whole.bin", tmp_path / "uploads.json"
    sha256 = large_file(source, MIB)
    headers = {"Authorization": f"Bearer {key.key}", "Tus-Resumable": "1.0.0"}
    created = requests.post(f"{api_url}/api/v1/uploads", headers={**headers, "Upload-Length": str(MIB)}, timeout=10)
    assert created.status_code == 201, created.text
    upload_url = f"{api_url}{created.headers['Location']}"
    with storage.database.transaction() as session:  # every byte durable and recorded, nothing stored
        upload = session.get(ResumableUpload, uuid.UUID(upload_url.rsplit("/", 1)[-1]))
        assert upload is not None
        shutil.copyfile(source, storage.blobs.root / upload.part_path)
        upload.received = MIB
    with source.open("rb") as stream, open_state(state) as stored:  # what the interrupted run left in its state
        stored.set_item(VersionFingerprint(api_url, f"Bearer {key.key}").get_fingerprint(stream), upload_url)
    head = requests.head(upload_url, headers=headers, timeout=10)
    assert head.headers["Upload-Offset"] == str(MIB) and "File-Id" not in head.headers
    result = yolo_jobs(api_url, key.key, "--no-progress", "upload", str(source), "--state-file", str(state))
    assert result.returncode == EXIT_OK, result.stderr
    file_id, digest, _ = stored_line(result.stdout)
    assert digest == sha256 and upload_of(api_url, key, file_id, upload_url)["sha256"] == sha256
    assert stored_urls(state) == [], "a finished upload leaves the state file"

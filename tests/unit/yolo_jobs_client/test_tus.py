"""The resumable uploads' local side: which stored upload a file may resume, the state file, and tuspy's
failures told as the server's errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from yolo_jobs_client.errors import AuthError, Conflict, NotFound, Unavailable, UsageError
from yolo_jobs_client.tus import HEAD_BYTES, VersionFingerprint, open_state, tus_error
from yolo_jobs_client.uploads import default_state_file

URL = "https://api.example/api/v1/uploads/1"


def fingerprint(path: Path, base_url: str = "https://api.example", key: str = "Bearer yj_a") -> str:
    with path.open("rb") as stream:
        return VersionFingerprint(base_url, key).get_fingerprint(stream)


def test_the_fingerprint_names_one_version_of_a_file_for_one_server_and_key(tmp_path: Path) -> None:
    data = os.urandom(HEAD_BYTES + 10)
    path = tmp_path / "a.bin"
    path.write_bytes(data)
    first = fingerprint(path)
    assert fingerprint(path) == first and "yj_a" not in first, "stable, and no key in the state file"
    renamed = path.rename(tmp_path / "b.bin")
    assert fingerprint(renamed) == first, "a moved file still resumes"
    assert fingerprint(renamed, base_url="https://other.example") != first
    assert fingerprint(renamed, key="Bearer yj_b") != first

    # Same size, same first 64 KiB (tuspy's own fingerprint), another tail written later: another upload.
    twin = tmp_path / "twin.bin"
    twin.write_bytes(data[:HEAD_BYTES] + b"x" * 10)
    os.utime(twin, ns=(renamed.stat().st_atime_ns, renamed.stat().st_mtime_ns + 1))
    assert fingerprint(twin) != first
    os.utime(twin, ns=(renamed.stat().st_atime_ns, renamed.stat().st_mtime_ns))
    assert fingerprint(twin) == first, "only size, time and head tell versions apart; time is what a write moves"


def test_the_state_file_keeps_urls_between_runs_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"
    with open_state(path) as state:
        state.set_item("k", URL)
    with open_state(path) as state:
        assert state.get_item("k") == URL
        state.remove_item("k")
        assert state.get_item("k") is None
    path.write_text('{"_default": {"1": {"key": "k", "url"')  # a write cut short
    with pytest.raises(UsageError, match=r"damaged.*remove it"), open_state(path):
        pass


def test_the_default_state_file_is_under_the_users_state_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/srv/state")
    assert default_state_file() == Path("/srv/state/yolo-jobs/uploads.json")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert default_state_file() == Path("/home/someone/.local/state/yolo-jobs/uploads.json")


def test_tuspy_failures_become_the_servers_errors() -> None:
    body = b'{"error": {"code": "offset_mismatch", "message": "the upload holds 10 bytes"}}'
    conflict = tus_error(TusUploadFailed("", 409, body), "PATCH", URL)
    assert (type(conflict), conflict.code, conflict.message, conflict.status) == (
        Conflict,
        "offset_mismatch",
        "the upload holds 10 bytes",
        409,
    )
    head = tus_error(TusCommunicationError("Attempt to retrieve offset fails with status 401", 401, b""), "HEAD", URL)
    assert (type(head), head.message) == (AuthError, f"HTTP 401 from HEAD {URL}")
    assert isinstance(tus_error(TusUploadFailed("", 404, None), "PATCH", URL), NotFound)
    assert isinstance(tus_error(TusUploadFailed("", 413, b"{}"), "POST", URL), UsageError)
    lost = tus_error(TusUploadFailed(requests.ConnectionError("reset by peer")), "PATCH", URL)
    assert isinstance(lost, Unavailable) and lost.message == f"Cannot reach {URL}: reset by peer"

"""The command's arguments: sizes with units, and the new commands' shapes."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from yolo_jobs_client.cli import build_parser, byte_size, main
from yolo_jobs_client.errors import EXIT_USAGE
from yolo_jobs_client.uploads import CHUNK_BYTES


def test_sizes_in_bytes_or_binary_units() -> None:
    assert [byte_size(text) for text in ("65536", "256K", "64M", "64MiB", "1g", " 2 M ")] == [
        65536,
        256 * 1024,
        64 * 2**20,
        64 * 2**20,
        2**30,
        2 * 2**20,
    ]
    for bad in ("0", "-1", "1.5M", "64T", "M", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
            byte_size(bad)


def test_the_new_commands_parse() -> None:
    parser = build_parser()
    upload = parser.parse_args(["upload", "a.mp4", "b.tif", "--chunk-size", "8M", "--state-file", "s.json"])
    assert (upload.files, upload.chunk_size, upload.state_file, upload.checksum) == (
        [Path("a.mp4"), Path("b.tif")],
        8 * 2**20,
        Path("s.json"),
        False,
    )
    defaults = parser.parse_args(["upload", "a.mp4", "--checksum"])
    assert (defaults.chunk_size, defaults.state_file, defaults.checksum) == (CHUNK_BYTES, None, True)
    submit = parser.parse_args(["submit", "--file-id", "f1", "--file-id", "f2", "--model", "m"])
    assert (submit.paths, submit.file_ids, submit.model) == ([], ["f1", "f2"], "m")
    rerun = parser.parse_args(["rerun", "j1", "--model", "m", "--conf", "0.4", "--imgsz", "320", "--wait"])
    assert (rerun.job, rerun.model, rerun.conf, rerun.iou, rerun.imgsz, rerun.wait) == ("j1", "m", 0.4, None, 320, True)
    delete = parser.parse_args(["delete", "file", "f1"])
    assert (delete.kind, delete.id) == ("file", "f1")
    with pytest.raises(SystemExit):
        parser.parse_args(["delete", "model", "x"])


def test_a_submission_of_nothing_is_a_usage_error_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard): were a request made, the error would be "cannot reach", exit 5.
    assert main(["--url", "http://127.0.0.1:9", "--api-key", "yj_x", "submit"]) == EXIT_USAGE
    assert "Nothing to submit" in capsys.readouterr().err


def test_only_upload_pays_for_importing_tuspy() -> None:
    probe = "import sys, yolo_jobs_client.cli; print(sorted({'tusclient', 'aiohttp', 'tinydb'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"

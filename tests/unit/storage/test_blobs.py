"""Content-addressed blobs on the volume: temp files hashed as written, installed atomically, deleted by path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from storage import blobs as blobs_module
from storage.blobs import BlobStore, blob_relpath, file_sha256, is_sha256


def test_blob_paths_are_two_levels_of_the_digest() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert blob_relpath(digest) == f"blobs/{digest[:2]}/{digest[2:4]}/{digest}"


@pytest.mark.parametrize("value", ["", "ab" * 31, "AB" * 32, "g" * 64, "../" + "a" * 61])
def test_anything_but_a_lowercase_digest_is_refused(value: str) -> None:
    assert not is_sha256(value)
    with pytest.raises(ValueError, match="not a sha256"):
        blob_relpath(value)


def test_incoming_file_is_hashed_as_written_then_installed_at_its_address(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    blobs.ensure_layout()
    incoming = blobs.new_incoming()
    for chunk in (b"hello ", b"world"):
        incoming.write(chunk)
    digest = hashlib.sha256(b"hello world").hexdigest()
    assert (incoming.size, incoming.sha256) == (11, digest)

    relpath = blobs.install(incoming)
    assert relpath == blob_relpath(digest) and blobs.exists(relpath)
    assert file_sha256(blobs.path_of(relpath)) == digest
    assert list(blobs.tmp_dir.iterdir()) == [], "the temp file was moved, not copied"
    with blobs.open(relpath) as handle:
        assert handle.read() == b"hello world"
    assert blobs.delete(relpath) == 11 and not blobs.exists(relpath)
    assert blobs.delete(relpath) == 0


def test_discarded_incoming_file_leaves_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    incoming = blobs.new_incoming()
    incoming.write(b"abandoned")
    incoming.discard()
    incoming.discard()
    assert incoming.closed and list(blobs.tmp_dir.iterdir()) == []
    assert blobs.is_writable() and list(blobs.tmp_dir.iterdir()) == []


def test_installing_makes_the_digest_directories_and_fsyncs_each_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = BlobStore(tmp_path)
    blobs.ensure_layout()
    synced: list[Path] = []
    fsync_dir = blobs_module.fsync_dir
    monkeypatch.setattr(blobs_module, "fsync_dir", lambda directory: synced.append(directory) or fsync_dir(directory))
    incoming = blobs.new_incoming()
    incoming.write(b"durable")
    target = blobs.path_of(blobs.install(incoming))
    assert synced == [blobs.blobs_dir, target.parent.parent, target.parent]

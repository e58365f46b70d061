"""Part files of resumable uploads: made durably, appended at an offset with any unrecorded tail cut first,
hashed from disk in chunks, hard-linked into place as a blob, and found by name."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from storage import parts as parts_module
from storage.blobs import BlobStore, blob_relpath
from storage.parts import PARTS_DIR, PartStore, part_relpath


def test_a_part_is_named_by_its_upload_id_under_its_own_folder(tmp_path: Path) -> None:
    upload_id = uuid.uuid4()
    parts = PartStore(tmp_path)
    relpath = parts.create(upload_id)
    assert relpath == part_relpath(upload_id) == f"{PARTS_DIR}/{upload_id.hex}"
    assert parts.path_of(relpath).stat().st_size == 0
    with pytest.raises(FileExistsError):
        parts.create(upload_id)


def test_a_writer_cuts_an_unrecorded_tail_before_it_appends(tmp_path: Path) -> None:
    parts = PartStore(tmp_path)
    relpath = parts.create(uuid.uuid4())
    with parts.writer(relpath, 0) as part:
        part.write(b"recorded|")
        part.sync()
        part.write(b"never recorded")  # a crash before the offset was recorded
    with parts.writer(relpath, len(b"recorded|")) as part:
        part.write(memoryview(b"next piece"))
        assert part.offset == part.synced + len(b"next piece")
    assert parts.path_of(relpath).read_bytes() == b"recorded|next piece"


def test_what_was_not_synced_is_discarded(tmp_path: Path) -> None:
    parts = PartStore(tmp_path)
    relpath = parts.create(uuid.uuid4())
    with parts.writer(relpath, 0) as part:
        part.write(b"a" * 10)
        part.sync()
        part.write(b"b" * 10)
        part.discard_unsynced()
        assert (part.offset, part.synced) == (10, 10)
        part.write(b"c")
    assert parts.path_of(relpath).read_bytes() == b"a" * 10 + b"c"


def test_the_part_is_hashed_from_disk_in_chunks_up_to_a_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts_module, "HASH_CHUNK_BYTES", 7)  # several reads, the last one short
    parts = PartStore(tmp_path)
    relpath = parts.create(uuid.uuid4())
    data = os.urandom(100)
    parts.path_of(relpath).write_bytes(data)
    assert parts.sha256(relpath, 100).hexdigest() == hashlib.sha256(data).hexdigest()
    assert parts.sha256(relpath, 50).hexdigest() == hashlib.sha256(data[:50]).hexdigest()
    with pytest.raises(ValueError, match="fewer than 101 bytes"):
        parts.sha256(relpath, 101)


def test_a_finished_part_is_linked_into_place_and_outlives_its_own_name(tmp_path: Path) -> None:
    blobs, parts = BlobStore(tmp_path), PartStore(tmp_path)
    blobs.ensure_layout()
    relpath = parts.create(uuid.uuid4())
    data = b"a whole file"
    parts.path_of(relpath).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    stale = blobs.path_of(blob_relpath(digest))
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"a leftover at the address")

    assert blobs.link_into_place(parts.path_of(relpath), digest) == blob_relpath(digest)
    assert parts.path_of(relpath).exists(), "the part keeps its name until the row is committed"
    assert parts.remove(relpath) and not parts.remove(relpath)
    assert stale.read_bytes() == data
    assert list(blobs.tmp_dir.iterdir()) == []


def test_scan_finds_parts_by_name_only(tmp_path: Path) -> None:
    parts = PartStore(tmp_path)
    assert list(parts.scan()) == []
    upload_id = uuid.uuid4()
    parts.path_of(parts.create(upload_id)).write_bytes(b"12345")
    (parts.directory / "not-an-upload").write_bytes(b"x")
    (parts.directory / str(upload_id)).write_bytes(b"x")  # the hyphenated spelling is not a part's name
    found = list(parts.scan())
    assert [(part.upload_id, part.size) for part in found] == [(upload_id, 5)]

"""The upload service on a real database and volume, without HTTP: what a piece leaves behind when it ends
well, early, too long, with a wrong checksum or after a failure; the hash kept or rebuilt; finishing into
a deduplicated stored file (an image, a video with its probe) or refusing what is neither, the upload
removed; model weights, which only an admin may declare and which must be what their name says; and the expiry
sweep."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from config.settings import FileSettings
from files.errors import LargerThanQuota
from harness.images import image_bytes
from resumable import service as service_module
from resumable.errors import (
    ChecksumMismatch,
    ExceedsLength,
    OffsetMismatch,
    PurposeNotAllowed,
    UnknownPurpose,
    UploadBusy,
    UploadNotFound,
)
from resumable.expiry import ORPHAN_PART_GRACE, sweep_uploads
from resumable.locks import upload_lock
from resumable.service import Checksum, UploadService, find_upload
from storage import Storage
from storage.images import UnsupportedMedia
from storage.tables import ResumableUpload, StoredFile, TenantFile
from tests.helpers import add_key
from tests.unit.jobs.test_registry import zipped
from tests.unit.storage.test_media import padded_image, video_bytes

SETTINGS = FileSettings()


def body(data: bytes, piece: int = 1000) -> service_module.Reader:
    """A body read as a client sends it: ``data`` in reads of at most ``piece`` bytes."""
    stream = iter(data[at : at + piece] for at in range(0, len(data), piece))
    pending = bytearray()

    def read(size: int) -> bytes:
        while len(pending) < size:
            chunk = next(stream, b"")
            if not chunk:
                break
            pending.extend(chunk)
        taken = bytes(pending[:size])
        del pending[:size]
        return taken

    return read


def failing_after(data: bytes, reads: int, error: BaseException) -> service_module.Reader:
    read = body(data)
    count = 0

    def failing(size: int) -> bytes:
        nonlocal count
        count += 1
        if count > reads:
            raise error
        return read(size)

    return failing


@pytest.fixture()
def tenant(store: Storage) -> uuid.UUID:
    return add_key(store, f"t-{uuid.uuid4().hex[:6]}").tenant_id


@pytest.fixture()
def service(store: Storage) -> UploadService:
    return UploadService(store, SETTINGS)


def new_upload(service: UploadService, tenant: uuid.UUID, length: int, name: str = "a.bin") -> ResumableUpload:
    with service.storage.database.session() as session:
        return service.create(session, tenant, length, {"filename": name}, name)


def state(store: Storage, upload_id: uuid.UUID) -> ResumableUpload:
    with store.database.transaction() as session:
        return find_upload(session, upload_id, None)


def part_bytes(service: UploadService, upload: ResumableUpload) -> bytes:
    return service.parts.path_of(upload.part_path).read_bytes()


def test_pieces_on_another_replica_finish_with_the_hash_rebuilt_from_disk(
    store: Storage, service: UploadService, tenant: uuid.UUID
) -> None:
    data = padded_image(10_000, seed=1)
    upload = new_upload(service, tenant, len(data))
    assert service.append(upload.id, tenant, 0, 4000, body(data[:4000])).received == 4000
    assert service.hashes.take(upload.id, 4000) is not None, "the same process keeps the running hash"
    replica = UploadService(store, SETTINGS)  # another process: no running hash for this upload
    finished = replica.append(upload.id, tenant, 4000, None, body(data[4000:]))
    assert finished.received == finished.length and finished.file_id is not None
    with store.database.transaction() as session:
        file = session.get(StoredFile, finished.file_id)
        assert file is not None and file.sha256 == hashlib.sha256(data).hexdigest()
        assert (file.content_type, file.width, file.height, file.media) == ("image/png", 40, 30, None)
    assert not service.parts.path_of(upload.part_path).exists()
    with pytest.raises(OffsetMismatch):
        replica.append(upload.id, tenant, 0, 1, body(b"x"))
    assert replica.append(upload.id, tenant, len(data), 0, body(b"")).file_id == finished.file_id


def test_a_body_that_ends_early_keeps_what_arrived(service: UploadService, tenant: uuid.UUID) -> None:
    upload = new_upload(service, tenant, 5000)
    after = service.append(upload.id, tenant, 0, 5000, body(b"z" * 1234))  # the client went away
    assert after.received == 1234 and state(service.storage, upload.id).received == 1234
    assert part_bytes(service, upload) == b"z" * 1234


def test_a_long_piece_is_recorded_as_it_goes_and_a_failure_keeps_what_was_recorded(
    service: UploadService, tenant: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "CHECKPOINT_BYTES", 3000)
    monkeypatch.setattr(service_module, "READ_BYTES", 1000)
    data = padded_image(10_000, seed=2)
    upload = new_upload(service, tenant, len(data))
    with pytest.raises(OSError, match="disk full"):
        service.append(upload.id, tenant, 0, None, failing_after(data, 7, OSError(28, "disk full")))
    kept = state(service.storage, upload.id).received
    assert kept == 6000 and part_bytes(service, upload) == data[:6000], "two checkpoints, the tail cut"
    finished = service.append(upload.id, tenant, kept, None, body(data[kept:]))
    with service.storage.database.transaction() as session:
        file = session.get(StoredFile, finished.file_id)
        assert file is not None and file.sha256 == hashlib.sha256(data).hexdigest()


def test_a_checksummed_piece_counts_only_whole_and_matching(
    service: UploadService, tenant: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "CHECKPOINT_BYTES", 1000)  # never applies to a checksummed piece
    data = os.urandom(8000)
    upload = new_upload(service, tenant, len(data))
    wrong = Checksum("sha1", hashlib.sha1(b"other").digest())
    with pytest.raises(ChecksumMismatch):
        service.append(upload.id, tenant, 0, 5000, body(data[:5000]), wrong)
    assert state(service.storage, upload.id).received == 0 and part_bytes(service, upload) == b""
    cut = Checksum("sha256", hashlib.sha256(data[:5000]).digest())
    with pytest.raises(ChecksumMismatch):  # the body ended early: its bytes do not match the checksum
        service.append(upload.id, tenant, 0, 5000, body(data[:2500]), cut)
    assert state(service.storage, upload.id).received == 0
    assert service.append(upload.id, tenant, 0, 5000, body(data[:5000]), cut).received == 5000


def test_a_body_without_a_length_that_goes_past_the_upload_keeps_nothing_unrecorded(
    service: UploadService, tenant: uuid.UUID
) -> None:
    upload = new_upload(service, tenant, 3000)
    with pytest.raises(ExceedsLength):
        service.append(upload.id, tenant, 0, None, body(b"q" * 3001))
    assert state(service.storage, upload.id).received == 0 and part_bytes(service, upload) == b""
    with pytest.raises(ExceedsLength):
        service.append(upload.id, tenant, 0, 3001, body(b"q" * 3001))


def test_one_writer_at_a_time(service: UploadService, tenant: uuid.UUID) -> None:
    upload = new_upload(service, tenant, 10)
    with upload_lock(service.storage.database.engine, upload.id) as held:
        assert held
        with pytest.raises(UploadBusy):
            service.append(upload.id, tenant, 0, 10, body(b"0123456789"))
        with pytest.raises(UploadBusy):
            service.terminate(upload.id, tenant)
    assert state(service.storage, upload.id).received == 0


def test_the_same_bytes_from_two_tenants_are_one_stored_image_each_tenant_holds(
    store: Storage, service: UploadService, tenant: uuid.UUID
) -> None:
    other = add_key(store, f"t-{uuid.uuid4().hex[:6]}").tenant_id
    png = image_bytes(40, 30, seed=3)
    ids = []
    for owner in (tenant, other, tenant):
        upload = new_upload(service, owner, len(png), name=f"{owner}.png")
        ids.append(service.append(upload.id, owner, 0, len(png), body(png)).file_id)
    assert ids[0] == ids[1] == ids[2]
    with store.database.transaction() as session:
        file = session.get(StoredFile, ids[0])
        assert file is not None and (file.content_type, file.width, file.height) == ("image/png", 40, 30)
        holders = set(session.scalars(select(TenantFile.tenant_id).where(TenantFile.file_id == ids[0])))
    assert holders == {tenant, other}
    with pytest.raises(UploadNotFound):
        service.append(upload.id, other, 0, 0, body(b""))


def test_the_sweep_removes_expired_uploads_leftover_parts_and_logs_each(
    store: Storage, service: UploadService, tenant: uuid.UUID, caplog: pytest.LogCaptureFixture
) -> None:
    expired, busy, live = (new_upload(service, tenant, 100) for _ in range(3))
    png = image_bytes(20, 10, seed=4)
    whole = new_upload(service, tenant, len(png))
    service.append(expired.id, tenant, 0, None, body(b"e" * 40))
    # A process that died after recording the last byte, before storing the file.
    service.parts.path_of(whole.part_path).write_bytes(png)
    past = datetime.now(UTC) - timedelta(minutes=1)
    with store.database.transaction() as session:
        session.execute(
            update(ResumableUpload).where(ResumableUpload.id.in_([expired.id, busy.id])).values(expires_at=past)
        )
        session.execute(update(ResumableUpload).where(ResumableUpload.id == whole.id).values(received=len(png)))
    old = (datetime.now(UTC) - ORPHAN_PART_GRACE - timedelta(minutes=1)).timestamp()
    orphan, young = service.parts.create(uuid.uuid4()), service.parts.create(uuid.uuid4())
    os.utime(service.parts.path_of(orphan), (old, old))

    with caplog.at_level(logging.INFO, logger="resumable.expiry"), upload_lock(store.database.engine, busy.id):
        swept = sweep_uploads(UploadService(store, SETTINGS))  # the worker's own service
    assert (swept.expired, swept.busy, swept.stray_parts, swept.finished) == (1, 1, 1, 1)
    assert f"upload expired id={expired.id} tenant={tenant} received=40" in caplog.text
    assert not service.parts.path_of(expired.part_path).exists() and not service.parts.path_of(orphan).exists()
    assert service.parts.path_of(young).exists() and service.parts.path_of(live.part_path).exists()
    stored = state(store, whole.id)
    assert stored.file_id is not None and not service.parts.path_of(whole.part_path).exists()
    with store.database.transaction() as session:
        file = session.get(StoredFile, stored.file_id)
        assert file is not None and file.sha256 == hashlib.sha256(png).hexdigest()
    with pytest.raises(UploadNotFound):  # expired, not yet swept: gone for the client all the same
        state(store, busy.id)
    assert sweep_uploads(service).expired == 1  # its writer let go


def test_a_video_is_stored_with_its_probe(store: Storage, service: UploadService, tenant: uuid.UUID) -> None:
    video = video_bytes("matroska", frames=30, rotation=90)
    upload = new_upload(service, tenant, len(video), name="clip.mkv")
    finished = service.append(upload.id, tenant, 0, len(video), body(video))
    with store.database.transaction() as session:
        file = session.get(StoredFile, finished.file_id)
        assert file is not None and (file.content_type, file.width, file.height) == ("video/x-matroska", 48, 64)
        assert file.media is not None and (file.media["kind"], file.media["frames"]) == ("video", 30)
        assert (file.media["rotation"], file.media["width"], file.media["height"]) == (270, 48, 64)


def test_bytes_neither_image_nor_video_are_refused_and_the_upload_goes(
    store: Storage, service: UploadService, tenant: uuid.UUID
) -> None:
    data = b"just some text\n" * 200
    upload = new_upload(service, tenant, len(data), name="notes.txt")
    assert service.append(upload.id, tenant, 0, 1000, body(data[:1000])).received == 1000
    with pytest.raises(UnsupportedMedia, match=r"^notes\.txt: the file is neither an image .* FFmpeg decodes\.$"):
        service.append(upload.id, tenant, 1000, None, body(data[1000:]))
    with pytest.raises(UploadNotFound):
        state(store, upload.id)
    assert not service.parts.path_of(upload.part_path).exists()
    assert service.hashes.take(upload.id, len(data)) is None
    with store.database.transaction() as session:
        assert session.scalar(select(StoredFile.id)) is None


def test_an_empty_upload_is_refused_at_its_creation_and_nothing_is_kept(
    store: Storage, service: UploadService, tenant: uuid.UUID
) -> None:
    with pytest.raises(UnsupportedMedia):
        new_upload(service, tenant, 0, name="empty.png")
    with store.database.transaction() as session:
        assert session.scalar(select(ResumableUpload.id)) is None and session.scalar(select(StoredFile.id)) is None
    assert list(service.parts.directory.iterdir()) == []


def test_only_an_admin_sends_weights_and_only_weights_of_the_form_their_name_says(
    store: Storage, service: UploadService, tenant: uuid.UUID
) -> None:
    weights = zipped(b"tensors")
    declared = {"filename": "yolo11n.pt", "purpose": "weights"}

    def create(
        metadata: dict[str, str], admin: bool, length: int = len(weights), on: UploadService = service
    ) -> ResumableUpload:
        with store.database.session() as session:
            return on.create(session, tenant, length, metadata, metadata["filename"], admin=admin)

    refusals = [
        (declared, False, PurposeNotAllowed, "Only an admin key may send model weights"),
        ({**declared, "purpose": "backup"}, True, UnknownPurpose, "purpose 'backup' is unknown"),
        ({**declared, "filename": "m.engine"}, True, UnsupportedMedia, r"^m\.engine: weights are sent as a \.pt"),
    ]
    for metadata, admin, refusal, sentence in refusals:
        with pytest.raises(refusal, match=sentence):
            create(metadata, admin)
    with pytest.raises(LargerThanQuota):  # quotas count weights as any file
        create(declared, True, on=UploadService(store, FileSettings(QUOTA_STORAGE_BYTES=len(weights) - 1)))
    with store.database.transaction() as session:
        assert session.scalar(select(ResumableUpload.id)) is None, "nothing was created"

    upload = create(declared, admin=True)
    finished = service.append(upload.id, tenant, 0, len(weights), body(weights))
    with store.database.transaction() as session:
        file = session.get(StoredFile, finished.file_id)
        assert file is not None and file.sha256 == hashlib.sha256(weights).hexdigest()
        assert (file.content_type, file.width, file.height, file.media) == (
            "application/octet-stream",
            None,
            None,
            None,
        )

    text = b"not weights at all\n" * 100
    undeclared = {"filename": "yolo11n.pt"}  # an admin's upload is media unless it says otherwise
    for metadata, data in ((declared, text), (undeclared, weights)):
        upload = create(metadata, admin=True, length=len(data))
        with pytest.raises(UnsupportedMedia, match=r"^yolo11n\.pt: the file is (not PyTorch weights|neither)"):
            service.append(upload.id, tenant, 0, len(data), body(data))
        with pytest.raises(UploadNotFound):
            state(store, upload.id)

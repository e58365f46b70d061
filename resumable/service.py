"""The resumable-upload service: create an upload, append a piece at its offset, finish it, terminate it.

Nothing here knows HTTP (``app/api/tus.py`` translates tus 1.0's headers): a piece
is a length, a ``read`` callable that returns ``b""`` at the end of the body, and
an optional checksum.

- Bytes go to the upload's part on the shared volume (:mod:`storage.parts`), read
  from the body :data:`READ_BYTES` at a time, so memory is bounded for any size.
- ``resumable_uploads.received`` counts the bytes that are durable. A writer cuts the
  part back to it before appending; a long piece is fsynced and recorded every
  :data:`CHECKPOINT_BYTES`, and when the body ends early (the client went away) what
  arrived is recorded too. A piece with a checksum counts only once it matched: a
  mismatch (or any failure: a full volume) cuts the part back to what was recorded.
- One writer per upload across replicas (:mod:`resumable.locks`); no transaction is
  open while a body is read. A busy upload is refused with nothing written.
- The piece that brings the upload to its length finishes it: the part is identified
  (:func:`storage.media.identify_file`, before any transaction: a video's frames are
  counted), then under the digest's lock it becomes the stored file (deduplicated by
  SHA-256, :func:`storage.files.store_part`), the tenant holds it (``tenant_files``) and
  the row records it; the part goes after the commit. Bytes that are neither an accepted
  image nor a video (or a frame over the pixel cap) are refused, and the upload goes
  with them, row and part, as a termination removes it. A crash between the last byte
  and the commit leaves an upload whose offset equals its length: an empty PATCH at that
  offset finishes it.
- One other kind of file is kept, and only when asked for: model weights, for an admin to register a model with
  (``jobs.registry``). The upload's creator declares them in its metadata (``purpose``: ``weights``), which only
  an admin may do, with a ``.pt`` or ``.onnx`` name (refused at creation otherwise, before any byte is sent);
  the whole part must then be of that form (:func:`storage.weights.identify_weights`) or it is refused as
  media are. Every other upload, an admin's too, must be an image or a video. Weights count against the
  tenant's quotas as any file does.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from config.settings import FileSettings
from files.ownership import add_tenant_file
from files.quota import ensure_room, pending_upload_bytes, pending_uploads
from resumable.errors import (
    AlreadyComplete,
    ChecksumMismatch,
    ExceedsLength,
    OffsetMismatch,
    PendingUploadsQuotaExceeded,
    PurposeNotAllowed,
    TooManyPendingUploads,
    UnknownPurpose,
    UploadBusy,
    UploadNotFound,
    UploadTooLarge,
)
from resumable.hashes import RunningHashes
from resumable.locks import upload_lock
from storage import Storage
from storage.files import store_part
from storage.images import MAX_PIXELS, MediaRefused
from storage.locks import lock_digests
from storage.media import FileInfo, identify_file
from storage.parts import PartStore, PartWriter
from storage.tables import ResumableUpload, StoredFile
from storage.weights import check_weights_name, identify_weights

log = logging.getLogger(__name__)

# Bytes read from a body at once (and so at most held in memory per request).
READ_BYTES = 1024 * 1024
# A long piece without a checksum is fsynced and its offset recorded this often.
CHECKPOINT_BYTES = 64 * 1024 * 1024
# The algorithms a piece's checksum may use (tus 1.0's Checksum extension), by hashlib's names.
CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256")
# The metadata key that says what an upload holds, and its one value: weights, for a model (admin keys only).
PURPOSE = "purpose"
WEIGHTS = "weights"

# Reads at most n bytes of the body; b"" once it ended (or the client went away).
Reader = Callable[[int], bytes]


@dataclass(frozen=True)
class Checksum:
    """A piece's announced digest (``Upload-Checksum``): the algorithm and the raw digest bytes."""

    algorithm: str
    digest: bytes


def find_upload(session: Session, upload_id: uuid.UUID, tenant_id: uuid.UUID | None) -> ResumableUpload:
    """The upload, if it is the tenant's (every tenant's for None, an admin) and not expired; else UploadNotFound."""
    # Expired by the database's clock, as the pending bytes and the sweep judge it.
    live = or_(ResumableUpload.finished_at.is_not(None), ResumableUpload.expires_at > func.now())
    query = select(ResumableUpload).where(ResumableUpload.id == upload_id, live)
    if tenant_id is not None:
        query = query.where(ResumableUpload.tenant_id == tenant_id)
    upload = session.scalar(query)
    if upload is None:
        raise UploadNotFound()
    return upload


def holds_weights(metadata: dict[str, str]) -> bool:
    """Whether an upload's metadata declares model weights (:data:`PURPOSE`)."""
    return metadata.get(PURPOSE) == WEIGHTS


def check_purpose(metadata: dict[str, str], filename: str, admin: bool) -> None:
    """Refuse a declared purpose that is unknown (:class:`UnknownPurpose`), weights from a key that is not an
    admin's (:class:`PurposeNotAllowed`), or weights whose name is neither ``.pt`` nor ``.onnx``
    (``UnsupportedMedia``)."""
    purpose = metadata.get(PURPOSE)
    if purpose is None:
        return
    if purpose != WEIGHTS:
        raise UnknownPurpose(purpose)
    if not admin:
        raise PurposeNotAllowed()
    try:
        check_weights_name(filename)
    except MediaRefused as refused:
        raise refused.naming(filename) from None


def stored_file_of(session: Session, upload: ResumableUpload) -> StoredFile | None:
    """The stored file a finished upload became (None while unfinished)."""
    return session.get(StoredFile, upload.file_id) if upload.file_id is not None else None


class UploadService:
    """Resumable uploads on one deployment's storage, within the limits of ``FileSettings``; a video's frames
    are capped at ``max_pixels`` (``WORKER_MAX_IMAGE_PIXELS``, whose default this is)."""

    def __init__(
        self,
        storage: Storage,
        settings: FileSettings,
        hashes: RunningHashes | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.parts = PartStore(storage.blobs.root)
        self.hashes = hashes or RunningHashes()
        self.max_pixels = max_pixels

    def create(
        self,
        session: Session,
        tenant_id: uuid.UUID,
        length: int,
        metadata: dict[str, str],
        filename: str,
        admin: bool = False,
    ) -> ResumableUpload:
        """A new upload of ``length`` bytes named ``filename`` (as the caller cleaned it from ``metadata``) with its
        empty part, committed; an empty one is finished at once. ``admin``: whether the key creating it is an
        admin's, which alone may declare weights (:func:`check_purpose`).

        UploadTooLarge past MAX_FILE_BYTES; PendingUploadsQuotaExceeded past the tenant's
        unfinished bytes; LargerThanQuota / StorageQuotaExceeded when it could not be kept; UnsupportedMedia
        for an empty one (removed); :func:`check_purpose`'s refusals.
        """
        check_purpose(metadata, filename, admin)
        if length > self.settings.max_file_bytes:
            raise UploadTooLarge(length, self.settings.max_file_bytes)
        # The tenant's quota lock first (held until commit): its pending bytes are counted under it.
        ensure_room(session, tenant_id, 0, self.settings.storage_bytes, largest=length)
        if pending_uploads(session, tenant_id) >= self.settings.pending_uploads:
            raise TooManyPendingUploads(self.settings.pending_uploads)
        pending = pending_upload_bytes(session, tenant_id)
        if pending + length > self.settings.pending_upload_bytes:
            raise PendingUploadsQuotaExceeded(pending, length, self.settings.pending_upload_bytes)
        ensure_room(session, tenant_id, length, self.settings.storage_bytes, largest=length)
        upload_id = uuid.uuid4()
        now = datetime.now(UTC)
        upload = ResumableUpload(
            id=upload_id,
            tenant_id=tenant_id,
            length=length,
            received=0,
            filename=filename,
            metadata_=metadata,
            part_path=self.parts.create(upload_id),
            created_at=now,
            expires_at=now + self.settings.upload_expiry,
        )
        try:
            session.add(upload)
            session.commit()
        except BaseException:
            session.rollback()
            self.parts.remove(upload.part_path)
            raise
        return self._finish(upload) if length == 0 else upload

    def append(
        self,
        upload_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        offset: int,
        content_length: int | None,
        read: Reader,
        checksum: Checksum | None = None,
    ) -> ResumableUpload:
        """Write one piece at ``offset``; the upload as it stands after (finished if that was its last byte).
        A last byte that leaves neither an image nor a video (nor the weights declared) raises the media's
        refusal, the upload removed."""
        database = self.storage.database
        with database.transaction() as session:
            upload = find_upload(session, upload_id, tenant_id)
        if upload.is_finished:
            return _already_finished(upload, offset, content_length)
        with upload_lock(database.engine, upload_id) as held:
            if not held:
                raise UploadBusy()
            with database.transaction() as session:  # as the previous writer left it
                upload = find_upload(session, upload_id, tenant_id)
            if upload.is_finished:
                return _already_finished(upload, offset, content_length)
            if offset != upload.received:
                raise OffsetMismatch(offset, upload.received)
            if content_length is not None and content_length > upload.length - upload.received:
                raise ExceedsLength(upload.length)
            upload.received = self._write(upload, read, checksum)
            return self._finish(upload) if upload.received == upload.length else upload

    def terminate(self, upload_id: uuid.UUID, tenant_id: uuid.UUID | None) -> None:
        """Remove the upload: its row and its part (tus Termination). A finished upload's stored file stays."""
        database = self.storage.database
        with database.transaction() as session:
            find_upload(session, upload_id, tenant_id)
        with upload_lock(database.engine, upload_id) as held:
            if not held:
                raise UploadBusy()
            with database.transaction() as session:
                upload = find_upload(session, upload_id, tenant_id)
            self._remove(upload)

    def _write(self, upload: ResumableUpload, read: Reader, checksum: Checksum | None) -> int:
        """Append the body to the part; return the bytes now durable and recorded (the new ``received``)."""
        running = self.hashes.take(upload.id, upload.received)
        piece = hashlib.new(checksum.algorithm) if checksum is not None else None
        recorded = upload.received
        try:
            writer = self.parts.writer(upload.part_path, recorded)
        except FileNotFoundError:  # its part was removed (by hand, a volume restored without it): it cannot go on
            with self.storage.database.transaction() as session:
                session.execute(delete(ResumableUpload).where(ResumableUpload.id == upload.id))
            raise UploadNotFound() from None
        with writer as part:
            try:
                self._copy(upload, read, part, running, piece)
                if piece is not None and checksum is not None and piece.digest() != checksum.digest:
                    raise ChecksumMismatch(checksum.algorithm)
                part.sync()
            except BaseException:  # a mismatch, a full volume: what was not recorded is not data
                part.discard_unsynced()
                raise
            if part.offset != recorded:
                self._record(upload.id, part.offset)
            if running is not None:
                self.hashes.keep(upload.id, part.offset, running)
            return part.offset

    def _copy(
        self,
        upload: ResumableUpload,
        read: Reader,
        part: PartWriter,
        running: hashlib._Hash | None,
        piece: hashlib._Hash | None,
    ) -> None:
        """Copy the body to the part, up to the upload's length; checkpoint long pieces without a checksum."""
        checkpoint = part.offset + CHECKPOINT_BYTES
        while part.offset < upload.length:
            data = read(min(READ_BYTES, upload.length - part.offset))
            if not data:
                return
            part.write(data)
            for digest in (running, piece):
                if digest is not None:
                    digest.update(data)
            if piece is None and part.offset >= checkpoint:
                part.sync()
                self._record(upload.id, part.offset)
                if running is not None:
                    self.hashes.keep(upload.id, part.offset, running.copy())
                checkpoint = part.offset + CHECKPOINT_BYTES
        if read(1):  # a body without a length that goes on past the upload's
            raise ExceedsLength(upload.length)

    def _record(self, upload_id: uuid.UUID, received: int) -> None:
        statement = (
            update(ResumableUpload)
            .where(ResumableUpload.id == upload_id, ResumableUpload.finished_at.is_(None))
            .values(received=received)
        )
        with self.storage.database.transaction() as session:
            session.execute(statement)

    def _finish(self, upload: ResumableUpload) -> ResumableUpload:
        """Make the whole part the tenant's stored file and record it; the part goes after the commit."""
        running = self.hashes.take(upload.id, upload.length)
        if running is None:
            log.info(
                "upload hashed from its part id=%s bytes=%s: its pieces came to other processes",
                upload.id,
                upload.length,
            )
            running = self.parts.sha256(upload.part_path, upload.length)
        sha256 = running.hexdigest()
        part = self.parts.path_of(upload.part_path)
        info = self._identify(upload, part)
        with self.storage.database.transaction() as session:
            finished = session.get(ResumableUpload, upload.id, with_for_update=True)
            if finished is None:  # removed meanwhile (only an upload nobody holds the lock of can be)
                raise UploadNotFound()
            lock_digests(session, [sha256])
            file, _deduplicated = store_part(session, self.storage.blobs, part, sha256, upload.length, info)
            add_tenant_file(session, upload.tenant_id, file.id, upload.filename)
            finished.file_id, finished.received, finished.finished_at = file.id, upload.length, datetime.now(UTC)
        self.parts.remove(upload.part_path)
        self.hashes.drop(upload.id)
        return finished

    def _identify(self, upload: ResumableUpload, part: Path) -> FileInfo:
        """What the whole part is: weights if its creator declared them, else media; for bytes refused as that,
        the upload is removed and the refusal raised, naming the upload's file."""
        try:
            with open(part, "rb") as stream:
                if holds_weights(upload.metadata_):
                    return identify_weights(stream, upload.filename)
                return identify_file(stream, self.max_pixels)
        except MediaRefused as refused:
            self._remove(upload)
            raise refused.naming(upload.filename) from None

    def _remove(self, upload: ResumableUpload) -> None:
        """Delete the upload's row, then its part and running hash (a finished upload's stored file stays)."""
        with self.storage.database.transaction() as session:
            session.execute(delete(ResumableUpload).where(ResumableUpload.id == upload.id))
        self.parts.remove(upload.part_path)
        self.hashes.drop(upload.id)


def _already_finished(upload: ResumableUpload, offset: int, content_length: int | None) -> ResumableUpload:
    """A piece for a finished upload: an empty one at its end is answered as it stands, anything else refused."""
    if offset != upload.length:
        raise OffsetMismatch(offset, upload.length)
    if content_length:
        raise AlreadyComplete()
    return upload

"""Unfinished uploads expire: ``UPLOAD_EXPIRY_HOURS`` after it was created, an upload goes, row and part.

Beat runs :func:`sweep_uploads` every ``UPLOAD_SWEEP_INTERVAL_SECONDS``
(``tasks.maintenance.sweep_uploads``). An upload a request is writing to (its lock is
held) is left for the next run. The sweep also removes parts that no unfinished
upload owns: those of finished uploads (a crash between the commit and the part's
removal) at once, and those with no row at all (a creation that never committed)
after :data:`ORPHAN_PART_GRACE`. Each removal is logged. And it finishes an upload that
holds all its bytes but was never stored (the process died between its last byte and
the commit), as the empty PATCH a client could send would.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from more_itertools import chunked
from sqlalchemy import delete, select

from resumable.errors import UploadRefused
from resumable.locks import upload_lock
from resumable.service import UploadService
from storage import Storage
from storage.images import MediaRefused
from storage.parts import PartStore, part_relpath
from storage.tables import ResumableUpload

log = logging.getLogger(__name__)

# A part with no row is left alone this long: its upload's creation may not have committed yet.
ORPHAN_PART_GRACE = timedelta(hours=1)
# Expired uploads removed per run (the next run takes the rest), and part names checked per query.
SWEEP_BATCH = 500


@dataclass
class Swept:
    """What a sweep did: expired uploads removed, uploads left for later (busy), stray parts removed, the bytes
    freed, and whole uploads finished."""

    expired: int = 0
    busy: int = 0
    stray_parts: int = 0
    bytes_freed: int = 0
    finished: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def sweep_uploads(service: UploadService, now: datetime | None = None) -> Swept:
    """Remove the unfinished uploads that expired by ``now`` (default: now), finish the whole ones that were
    not, then remove the parts no upload owns."""
    now = now or datetime.now(UTC)
    swept = Swept()
    _remove_expired(service.storage, now, swept)
    _finish_whole(service, now, swept)
    _remove_stray_parts(service.storage, now, swept)
    return swept


def _finish_whole(service: UploadService, now: datetime, swept: Swept) -> None:
    whole = (
        select(ResumableUpload.id, ResumableUpload.length)
        .where(
            ResumableUpload.finished_at.is_(None),
            ResumableUpload.received == ResumableUpload.length,
            ResumableUpload.expires_at > now,
        )
        .limit(SWEEP_BATCH)
    )
    with service.storage.database.transaction() as session:
        stranded = list(session.execute(whole))
    for upload_id, length in stranded:
        try:
            service.append(upload_id, None, length, 0, lambda _size: b"")
        except UploadRefused:  # being written to, or gone meanwhile: the next run looks again
            continue
        except MediaRefused as exc:  # neither an image nor a video: the service removed it
            log.info("upload removed by the sweep id=%s: %s", upload_id, exc)
            continue
        except Exception:  # one upload that cannot be stored must not stop the sweep of the others
            log.exception("upload could not be finished by the sweep id=%s", upload_id)
            continue
        swept.finished += 1
        log.info("upload finished by the sweep id=%s", upload_id)


def _remove_expired(storage: Storage, now: datetime, swept: Swept) -> None:
    parts = PartStore(storage.blobs.root)
    expired = (
        select(ResumableUpload.id)
        .where(ResumableUpload.finished_at.is_(None), ResumableUpload.expires_at <= now)
        .order_by(ResumableUpload.expires_at)
        .limit(SWEEP_BATCH)
    )
    with storage.database.transaction() as session:
        upload_ids = list(session.scalars(expired))
    for upload_id in upload_ids:
        with upload_lock(storage.database.engine, upload_id) as held:
            if not held:  # a request is writing to it: the next run decides
                swept.busy += 1
                continue
            statement = (
                delete(ResumableUpload)
                .where(
                    ResumableUpload.id == upload_id,
                    ResumableUpload.finished_at.is_(None),
                    ResumableUpload.expires_at <= now,
                )
                .returning(ResumableUpload.tenant_id, ResumableUpload.received, ResumableUpload.part_path)
            )
            with storage.database.transaction() as session:
                removed = session.execute(statement).first()
            if removed is None:  # finished or removed meanwhile
                continue
            tenant_id, received, part_path = removed
            size = _size(parts, part_path)
            parts.remove(part_path)
            swept.expired += 1
            swept.bytes_freed += size
            log.info("upload expired id=%s tenant=%s received=%s", upload_id, tenant_id, received)


def _remove_stray_parts(storage: Storage, now: datetime, swept: Swept) -> None:
    parts = PartStore(storage.blobs.root)
    unknown_before = (now - ORPHAN_PART_GRACE).timestamp()
    for batch in chunked(parts.scan(), SWEEP_BATCH):
        ids = [part.upload_id for part in batch]
        with storage.database.transaction() as session:
            rows = session.execute(
                select(ResumableUpload.id, ResumableUpload.finished_at).where(ResumableUpload.id.in_(ids))
            )
            finished: dict[uuid.UUID, bool] = {upload_id: at is not None for upload_id, at in rows}
        for part in batch:
            if part.upload_id in finished and not finished[part.upload_id]:
                continue  # an unfinished upload's own part
            if part.upload_id not in finished and part.mtime >= unknown_before:
                continue  # perhaps a creation not committed yet
            with upload_lock(storage.database.engine, part.upload_id) as held:
                if not held:
                    continue
                if parts.remove(part_relpath(part.upload_id)):
                    swept.stray_parts += 1
                    if part.upload_id not in finished:  # a finished upload's part is its blob's other name
                        swept.bytes_freed += part.size
                    reason = "its upload finished" if part.upload_id in finished else "no upload has it"
                    log.info("upload part removed id=%s bytes=%s: %s", part.upload_id, part.size, reason)


def _size(parts: PartStore, relpath: str) -> int:
    try:
        return parts.path_of(relpath).stat().st_size
    except FileNotFoundError:
        return 0

"""A video's per-frame detections in ``frame_results``: written in bulk, read by time range, streamed for exports.

Why a table of its own: a two-hour video sampled at 30 fps is 216,000 frames. One row per frame with its
boxes as flat arrays (``boxes`` x1, y1, x2, y2 per box; one class, score and track per box) keeps that to a
few tens of megabytes, is written many rows to a statement, and is read a time range at a time by the web
player and a page at a time by the exports, never whole. The key is the frame's own timestamp (``pts``), so a
segment written again after its worker died inserts nothing twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from storage.tables import FrameResult

# Rows per INSERT: 8 columns each, under PostgreSQL's 65,535 bind parameters.
FRAMES_PER_STATEMENT = 2000
# Rows per page when the frames of a whole video are streamed (exports, tracks).
FRAMES_PER_PAGE = 5000


@dataclass(frozen=True)
class FrameRow:
    """One analysed frame: where it is in the video and what was found in it (display pixels)."""

    pts: int
    frame: int
    time: float
    boxes: Sequence[float]
    classes: Sequence[int]
    scores: Sequence[float]
    tracks: Sequence[int] | None = None

    @property
    def count(self) -> int:
        return len(self.classes)

    def detections(self, names: dict[int, str]) -> list[dict[str, Any]]:
        """The frame's boxes as the API shows an image's: Ultralytics' ``summary()`` rows, with a track when known."""
        found = []
        for i, cls in enumerate(self.classes):
            x1, y1, x2, y2 = self.boxes[4 * i : 4 * i + 4]
            detection: dict[str, Any] = {
                "name": names.get(cls, str(cls)),
                "class": cls,
                "confidence": self.scores[i],
                "box": {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
            }
            if self.tracks is not None and self.tracks[i] >= 0:
                detection["track"] = self.tracks[i]
            found.append(detection)
        return found


def frame_row(pts: int, frame: int, time: float, detections: Sequence[dict[str, Any]]) -> FrameRow:
    """A frame's row from the detector's boxes (``summary()`` rows), rounded as image results are."""
    boxes: list[float] = []
    for detection in detections:
        box = detection["box"]
        boxes += [round(box["x1"], 2), round(box["y1"], 2), round(box["x2"], 2), round(box["y2"], 2)]
    classes = [int(d["class"]) for d in detections]
    scores = [round(float(d["confidence"]), 4) for d in detections]
    return FrameRow(pts, frame, time, boxes, classes, scores)


def write_frames(session: Session, upload_id: uuid.UUID, rows: Sequence[FrameRow]) -> None:
    """Insert the frames' rows; a frame already written (an earlier attempt of its segment) is left as it is."""
    values = [
        {
            "upload_id": upload_id,
            "pts": r.pts,
            "frame": r.frame,
            "time": r.time,
            "boxes": list(r.boxes),
            "classes": list(r.classes),
            "scores": list(r.scores),
            "tracks": list(r.tracks) if r.tracks is not None else None,
        }
        for r in rows
    ]
    for start in range(0, len(values), FRAMES_PER_STATEMENT):
        statement = insert(FrameResult).values(values[start : start + FRAMES_PER_STATEMENT])
        session.execute(statement.on_conflict_do_nothing(index_elements=[FrameResult.upload_id, FrameResult.pts]))


def written_between(session: Session, upload_id: uuid.UUID, start: float, end: float) -> set[int]:
    """The pts of the frames already written in ``[start, end)`` seconds (a segment resuming skips them)."""
    query = select(FrameResult.pts).where(
        FrameResult.upload_id == upload_id, FrameResult.time >= start, FrameResult.time < end
    )
    return set(session.scalars(query))


def frames_between(session: Session, upload_id: uuid.UUID, start: float, end: float, limit: int) -> list[FrameRow]:
    """Up to ``limit`` frames with ``start <= time < end``, in time order (a page of the web player's range)."""
    query = (
        select(FrameResult)
        .where(FrameResult.upload_id == upload_id, FrameResult.time >= start, FrameResult.time < end)
        .order_by(FrameResult.time, FrameResult.pts)
        .limit(limit)
    )
    return [_row(r) for r in session.scalars(query)]


def frames_after(
    session: Session, upload_id: uuid.UUID, after: tuple[float, int] | None, limit: int = FRAMES_PER_PAGE
) -> list[FrameRow]:
    """The next ``limit`` frames in time order after ``(time, pts)`` (from the first when None): a keyset page."""
    query = select(FrameResult).where(FrameResult.upload_id == upload_id)
    if after is not None:
        query = query.where(tuple_(FrameResult.time, FrameResult.pts) > after)
    rows = [_row(r) for r in session.scalars(query.order_by(FrameResult.time, FrameResult.pts).limit(limit))]
    session.expunge_all()
    return rows


def stream_frames(session: Session, upload_id: uuid.UUID, page: int = FRAMES_PER_PAGE) -> Iterator[FrameRow]:
    """Every frame of the upload in time order, read a page at a time, so memory is one page."""
    after: tuple[float, int] | None = None
    while True:
        rows = frames_after(session, upload_id, after, page)
        yield from rows
        if len(rows) < page:
            return
        after = (rows[-1].time, rows[-1].pts)


def write_tracks(session: Session, upload_id: uuid.UUID, tracks: Sequence[tuple[int, Sequence[int]]]) -> None:
    """Set each frame's track ids (``(pts, ids)``, one id per box in its order) in one statement per call."""
    if not tracks:
        return
    session.execute(
        text(
            "UPDATE frame_results AS f SET tracks = string_to_array(v.ids, ',')::integer[] "
            "FROM unnest(CAST(:pts AS bigint[]), CAST(:ids AS text[])) AS v(pts, ids) "
            "WHERE f.upload_id = :upload_id AND f.pts = v.pts"
        ),
        {
            "upload_id": upload_id,
            "pts": [pts for pts, _ in tracks],
            "ids": [",".join(str(i) for i in ids) for _, ids in tracks],
        },
    )


def _row(row: FrameResult) -> FrameRow:
    return FrameRow(row.pts, row.frame, row.time, row.boxes, row.classes, row.scores, row.tracks)

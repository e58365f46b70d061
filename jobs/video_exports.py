"""A video job's per-frame detections as the files tracking and labelling tools import.

``mot`` (MOTChallenge tracker results), ``cvat-video`` (CVAT for video 1.1 XML), ``coco`` (COCO detection JSON,
one image per analysed frame, with the video fields TAO and CVAT read) and ``csv`` (one row per box). The image
exports (:mod:`jobs.exports`) hand a job over as images; a video is one upload with a row per analysed frame,
so it is handed over as :class:`VideoExport`, whose :attr:`~VideoExport.rows` reads the upload's
``frame_results`` in time order a page at a time, anew on each call.

An hour of video is 108,000 frames of up to 300 boxes, so, as for images, no format holds the rows: each yields
its bytes in chunks (:attr:`jobs.exports.ExportFile.chunks`) as it reads them. MOT and CSV are written in time
order as the rows come; COCO reads the rows twice (its images, then its annotations). CVAT groups the boxes by
track, which is not the order they come in: see :func:`cvat_video`.

Frame numbers are the video's (``FrameRow.frame``, counted from 0), not the index of the sampled frame, so that
a tool that decodes the video itself finds the frame: MOT counts them from 1, as its format does.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePath
from tempfile import SpooledTemporaryFile
from typing import IO, Any
from xml.sax.saxutils import escape, quoteattr

from jobs.exports import CSV_FILE, JSON_FILE, ExportFile, csv_line, in_chunks, json_array, json_bytes
from jobs.frames import FrameRow

# The kinds of file a video export is, besides JSON_FILE and CSV_FILE: media type and extension.
MOT_FILE = ("text/plain", "txt")
XML_FILE = ("application/xml", "xml")
VIDEO_MEDIA_TYPES = tuple(media_type for media_type, _ in (MOT_FILE, XML_FILE, JSON_FILE, CSV_FILE))
VIDEO_CSV_COLUMNS = ("frame", "time", "x1", "y1", "x2", "y2", "class", "name", "confidence", "track")
# frame_results.tracks: a box the tracker gave no track.
NO_TRACK = -1
# A CVAT export keeps its boxes in memory up to this size, then in a temporary file.
SPOOL_BYTES = 16 * 1024 * 1024
# The COCO export's one video.
COCO_VIDEO_ID = 1


@dataclass(frozen=True)
class VideoExport:
    """What a video's export is built from: the video (display size, average frame rate), the job's sampling
    (``sampled_fps`` ``None``: every frame; ``frames_total`` sampled frames), the model's classes, and
    :attr:`rows`, which each call reads anew in time order, a page at a time."""

    job_id: str
    upload_id: str
    filename: str
    width: int
    height: int
    fps: float
    sampled_fps: float | None
    frames_total: int
    names: dict[int, str]
    rows: Callable[[], Iterable[FrameRow]]


@dataclass(frozen=True, slots=True)
class Box:
    """One detected box of a frame; ``track`` is ``None`` when it has none."""

    x1: float
    y1: float
    x2: float
    y2: float
    cls: int
    score: float
    track: int | None

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


def frame_boxes(row: FrameRow) -> Iterator[Box]:
    """The boxes of ``row``, in the order the row holds them."""
    for number, (cls, score) in enumerate(zip(row.classes, row.scores, strict=True)):
        x1, y1, x2, y2 = row.boxes[4 * number : 4 * number + 4]
        track = row.tracks[number] if row.tracks is not None else NO_TRACK
        yield Box(x1, y1, x2, y2, cls, score, None if track == NO_TRACK else track)


def class_name(names: dict[int, str], cls: int) -> str:
    """The model's name of class ``cls``, ``class<cls>`` for one it does not name (as ``data.yaml`` does)."""
    return names.get(cls, f"class{cls}")


def _pixels(value: float) -> float:
    return round(float(value), 3)


def _score(value: float) -> float:
    # The scores are stored as float4: more digits than these are noise.
    return round(float(value), 4)


def _stem(export: VideoExport) -> str:
    return PurePath(export.filename).stem or "video"


def mot(export: VideoExport) -> ExportFile:
    """MOTChallenge tracker results: ``frame,id,x,y,w,h,conf,-1,-1,-1``, one line per tracked box, ``frame`` the
    video's frame number counted from 1 and ``x,y`` the box's top-left corner in pixels (from 0, as trackers
    such as SORT and ByteTrack write them; motmetrics shifts ground truth and results alike).

    A box without a track is left out rather than written with id -1 as a detection file (``det.txt``) is: a
    results file is scored per id, and motmetrics' loader takes -1 as one more id, so every untracked box would
    count as the same object, which lowers IDF1. A job run without tracking has an empty MOT file.
    """
    return ExportFile(in_chunks(_mot_lines(export)), *MOT_FILE)


def _mot_lines(export: VideoExport) -> Iterator[bytes]:
    for row in export.rows():
        for box in frame_boxes(row):
            if box.track is None:
                continue
            values = (
                row.frame + 1,
                box.track,
                _pixels(box.x1),
                _pixels(box.y1),
                _pixels(box.width),
                _pixels(box.height),
                _score(box.score),
                -1,
                -1,
                -1,
            )
            yield (",".join(map(str, values)) + "\n").encode()


def coco(export: VideoExport) -> ExportFile:
    """COCO detection JSON with one image per analysed frame, ``<video stem>/frame_<frame:06d>.jpg`` (CVAT's
    name for a video's frame), and the video fields of TAO: a top-level ``videos`` entry, each image's
    ``video_id``, ``frame_index`` (the video's frame number) and ``time``, and each tracked box's ``track_id``,
    which is written again in ``attributes`` where CVAT's and Datumaro's COCO importers read it. Category ids
    are the model's class indexes plus one, as in the image export.

    The rows are read twice, for the images and then for the annotations, rather than kept or spooled: the
    database pages them cheaply, and a finished job's rows do not change between the two reads.
    """
    return ExportFile(in_chunks(_coco_pieces(export)), *JSON_FILE)


def _coco_pieces(export: VideoExport) -> Iterator[bytes]:
    classes = dict(export.names)
    stem = _stem(export)

    def images() -> Iterator[dict[str, Any]]:
        for image_id, row in enumerate(export.rows(), start=1):
            yield {
                "id": image_id,
                "file_name": f"{stem}/frame_{row.frame:06d}.jpg",
                "width": export.width,
                "height": export.height,
                "video_id": COCO_VIDEO_ID,
                "frame_index": row.frame,
                "time": round(row.time, 6),
            }

    def annotations() -> Iterator[dict[str, Any]]:
        number = 0
        for image_id, row in enumerate(export.rows(), start=1):
            for box in frame_boxes(row):
                classes.setdefault(box.cls, class_name(export.names, box.cls))
                number += 1
                yield _coco_annotation(number, image_id, box)

    info = {
        "description": f"yolo-jobs detections of job {export.job_id} in {export.filename}",
        "job_id": export.job_id,
        "upload_id": export.upload_id,
        "sampled_fps": export.sampled_fps,
        "frames_total": export.frames_total,
    }
    video = {
        "id": COCO_VIDEO_ID,
        "name": export.filename,
        "width": export.width,
        "height": export.height,
        "fps": export.fps,
    }
    yield b'{"info":' + json_bytes(info) + b',"licenses":[],"videos":' + json_bytes([video]) + b',"images":'
    yield from json_array(images())
    yield b',"annotations":'
    yield from json_array(annotations())
    categories = [{"id": cls + 1, "name": name, "supercategory": ""} for cls, name in sorted(classes.items())]
    yield b',"categories":' + json_bytes(categories) + b"}"


def _coco_annotation(number: int, image_id: int, box: Box) -> dict[str, Any]:
    annotation = {
        "id": number,
        "image_id": image_id,
        "category_id": box.cls + 1,
        "bbox": [_pixels(box.x1), _pixels(box.y1), _pixels(box.width), _pixels(box.height)],
        "area": _pixels(box.width * box.height),
        "iscrowd": 0,
        "score": _score(box.score),
    }
    if box.track is not None:
        annotation["track_id"] = box.track
        annotation["attributes"] = {"track_id": box.track}
    return annotation


def csv_rows(export: VideoExport) -> ExportFile:
    """One row per box: ``frame`` (the video's, from 0), ``time`` (seconds), the box's corners in pixels, its
    class, name, confidence and ``track`` (empty for a box without one).

    A frame without any box still has one row, its box columns empty, so every analysed frame appears and a
    frame seen empty is told apart from one never analysed.
    """

    def pieces() -> Iterator[bytes]:
        yield csv_line(VIDEO_CSV_COLUMNS)
        for row in export.rows():
            when = (row.frame, round(row.time, 6))
            empty = True
            for box in frame_boxes(row):
                empty = False
                corners = (_pixels(box.x1), _pixels(box.y1), _pixels(box.x2), _pixels(box.y2))
                found = (box.cls, class_name(export.names, box.cls), _score(box.score))
                yield csv_line((*when, *corners, *found, "" if box.track is None else box.track))
            if empty:
                yield csv_line((*when, *[""] * (len(VIDEO_CSV_COLUMNS) - len(when))))

    return ExportFile(in_chunks(pieces()), *CSV_FILE)


# CVAT for video 1.1 as CVAT itself writes and reads it (cvat/apps/dataset_manager/formats/cvat.py and
# bindings.py; docs.cvat.ai/docs/manual/advanced/xml_format): a <track> per object, its boxes together and in
# frame order. Frame numbers are the video's: CVAT's importer maps each to the task's frames as
# (frame - start_frame) / step and refuses any off that grid.


def cvat_video(export: VideoExport) -> ExportFile:
    """CVAT for video 1.1 XML: a ``<track>`` per track id, labelled with the class its boxes have most often
    (a CVAT track has one label), then a one-box track per box without a track (as CVAT exports a lone shape),
    numbered after the highest track id.

    A track's boxes are keyframes on the video's frame numbers. Where a track is lost its box is repeated with
    ``outside="1"`` on the next analysed frame (CVAT's end of a track, which also stops it interpolating across a
    gap); a track seen on the last analysed frame has no such box, since CVAT refuses frames past the task's end.
    The task's ``start_frame``/``stop_frame`` are the first and last analysed frames and, when they are evenly
    spaced (a rate that divides the video's), ``frame_filter`` is ``step=N``: a CVAT task made from the video
    with that step, or from all of its frames, takes the file.

    Boxes come in time order but are written by track, so one pass over the rows spools every box as a fixed-size
    record to a temporary file (in memory up to :data:`SPOOL_BYTES`, then on disk), each record linked to its
    track's next one; what is kept in memory is per track (its first and last record, its class counts), never per
    box. Then each track is written by following its links. This reads the rows once, where a pass per track would
    read them as many times as there are tracks; a per-track file would need a file per track.
    """
    return ExportFile(in_chunks(_cvat_pieces(export)), *XML_FILE)


@dataclass(frozen=True, slots=True)
class _Placed:
    """A box on its frame, with the frame analysed after it (:data:`_NO_FRAME` after the last)."""

    frame: int
    next_frame: int
    box: Box


_NO_FRAME = -1
# next record of the same track (offset, -1: none), frame, next frame, track (NO_TRACK: none), class, score, box.
_RECORD = struct.Struct("<qiiiif4f")
_NO_RECORD = -1


@dataclass(slots=True)
class _TrackChain:
    """Where a track's records start and end in the spool, and how often each class is its boxes'."""

    first: int
    last: int
    classes: Counter[int] = field(default_factory=Counter)


class _SpooledBoxes:
    """The boxes of a video, spooled in time order with each track's records linked into a chain."""

    def __init__(self, spool: IO[bytes]) -> None:
        self.spool = spool
        self.chains: dict[int, _TrackChain] = {}
        self.end = 0

    def add(self, placed: _Placed) -> None:
        box = placed.box
        track = NO_TRACK if box.track is None else box.track
        offset = self.end
        self.spool.seek(offset)
        self.spool.write(
            _RECORD.pack(
                _NO_RECORD, placed.frame, placed.next_frame, track, box.cls, box.score, box.x1, box.y1, box.x2, box.y2
            )
        )
        self.end += _RECORD.size
        if box.track is not None:
            self._link(box.track, offset).classes[box.cls] += 1

    def _link(self, track: int, offset: int) -> _TrackChain:
        track_chain = self.chains.get(track)
        if track_chain is None:
            track_chain = self.chains[track] = _TrackChain(offset, offset)
        else:
            self.spool.seek(track_chain.last)
            self.spool.write(struct.pack("<q", offset))
            track_chain.last = offset
        return track_chain

    def _read(self, offset: int) -> tuple[int, _Placed]:
        """The record at ``offset``: the offset of its track's next record, and its box."""
        self.spool.seek(offset)
        following, frame, next_frame, track, cls, score, *corners = _RECORD.unpack(self.spool.read(_RECORD.size))
        box = Box(*corners, cls, score, None if track == NO_TRACK else track)
        return following, _Placed(frame, next_frame, box)

    def track(self, chain: _TrackChain) -> Iterator[_Placed]:
        """A track's boxes in time order."""
        offset = chain.first
        while offset != _NO_RECORD:
            offset, placed = self._read(offset)
            yield placed

    def untracked(self) -> Iterator[_Placed]:
        """The boxes without a track, in time order."""
        for offset in range(0, self.end, _RECORD.size):
            placed = self._read(offset)[1]
            if placed.box.track is None:
                yield placed


@dataclass(slots=True)
class _FrameSpan:
    """The analysed frames' first and last numbers, and the one step between them when it is even."""

    first: int | None = None
    last: int | None = None
    step: int | None = None
    even: bool = True

    def add(self, frame: int) -> None:
        if self.last is not None:
            step = frame - self.last
            self.even = self.even and self.step in (None, step)
            self.step = step
        if self.first is None:
            self.first = frame
        self.last = frame

    @property
    def frame_step(self) -> int:
        """CVAT's frame step: the even step, else 1 (every frame from first to last)."""
        return self.step if self.even and self.step else 1

    @property
    def size(self) -> int:
        """How many frames CVAT's task over the span has."""
        if self.first is None or self.last is None:
            return 0
        return (self.last - self.first) // self.frame_step + 1


def _cvat_pieces(export: VideoExport) -> Iterator[bytes]:
    span = _FrameSpan()
    classes = dict(export.names)
    with SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        boxes = _SpooledBoxes(spool)
        for row, next_frame in _with_next_frame(export.rows()):
            span.add(row.frame)
            for box in frame_boxes(row):
                classes.setdefault(box.cls, class_name(export.names, box.cls))
                boxes.add(_Placed(row.frame, next_frame, box))
        yield _cvat_head(export, span, classes)
        for track_id, track_chain in sorted(boxes.chains.items()):
            label = classes[track_chain.classes.most_common(1)[0][0]]
            yield from _cvat_track(track_id, label, boxes.track(track_chain))
        first_free_id = max(boxes.chains, default=-1) + 1
        for track_id, placed in enumerate(boxes.untracked(), start=first_free_id):
            yield from _cvat_track(track_id, classes[placed.box.cls], [placed])
    yield b"</annotations>\n"


def _with_next_frame(rows: Iterable[FrameRow]) -> Iterator[tuple[FrameRow, int]]:
    """Each row with the number of the frame analysed after it (:data:`_NO_FRAME` after the last)."""
    previous: FrameRow | None = None
    for row in rows:
        if previous is not None:
            yield previous, row.frame
        previous = row
    if previous is not None:
        yield previous, _NO_FRAME


def _element(tag: str, text: str | int) -> str:
    return f"<{tag}>{escape(str(text))}</{tag}>"


def _cvat_head(export: VideoExport, span: _FrameSpan, classes: dict[int, str]) -> bytes:
    names = (name for _, name in sorted(classes.items()))
    labels = "".join(f"<label>{_element('name', name)}<attributes></attributes></label>" for name in names)
    task = "".join(
        (
            _element("name", export.filename),
            _element("size", span.size),
            _element("mode", "interpolation"),
            _element("overlap", 0),
            _element("bugtracker", ""),
            _element("flipped", "False"),
            _element("start_frame", span.first or 0),
            _element("stop_frame", span.last or 0),
            _element("frame_filter", f"step={span.frame_step}" if span.frame_step > 1 else ""),
            f"<labels>{labels}</labels>",
            f"<original_size>{_element('width', export.width)}{_element('height', export.height)}</original_size>",
        )
    )
    head = '<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n<version>1.1</version>\n'
    return f"{head}<meta><task>{task}</task></meta>\n".encode()


def _cvat_track(track_id: int, label: str, boxes: Iterable[_Placed]) -> Iterator[bytes]:
    yield f'<track id="{track_id}" label={quoteattr(label)} source="auto">\n'.encode()
    for frame, box, outside in _keyframes(boxes):
        corners = f'xtl="{box.x1:.2f}" ytl="{box.y1:.2f}" xbr="{box.x2:.2f}" ybr="{box.y2:.2f}"'
        flags = f'outside="{int(outside)}" occluded="0" keyframe="1" z_order="0"'
        yield f'<box frame="{frame}" {corners} {flags}/>\n'.encode()
    yield b"</track>\n"


def _keyframes(boxes: Iterable[_Placed]) -> Iterator[tuple[int, Box, bool]]:
    """A track's keyframes, ``(frame, box, outside)``: each box, and its repeat marked outside on the next
    analysed frame wherever the track is not seen there."""
    previous: _Placed | None = None
    for placed in boxes:
        if previous is not None and placed.frame != previous.next_frame:
            yield previous.next_frame, previous.box, True
        yield placed.frame, placed.box, False
        previous = placed
    if previous is not None and previous.next_frame != _NO_FRAME:
        yield previous.next_frame, previous.box, True


VIDEO_FORMATS: dict[str, Callable[[VideoExport], ExportFile]] = {
    "mot": mot,
    "cvat-video": cvat_video,
    "coco": coco,
    "csv": csv_rows,
}

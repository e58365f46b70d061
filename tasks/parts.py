"""``tasks.parts.run_part``: run one part of a large upload under its lease, and end it in PostgreSQL.

The message carries the job's id and the part's (:mod:`jobs.parts` says what parts are and how a job with
them ends). Three kinds:

- a video's **segment**: its sampled frames (``video.frames``: listed by demux first, so the count to do is
  exact) are decoded on a thread of their own while the batch before is predicted, and written in bulk
  (``jobs.frames``) at least every :data:`WRITE_SECONDS`, each write fenced by the part's lease and
  renewing it. A segment run again (its worker died) skips the frames already written: a killed worker
  costs the frames of one segment since its last write, and no frame is written twice. Frames that do not
  decode (a corrupt stretch) are counted, and the part's error names their range;
- an image's **tiles**: the image decoded whole (under ``WORKER_MAX_IMAGE_PIXELS``), each tile predicted at
  its native resolution and the boxes merged across the tiles' borders (``inference.tiles``); a part of no
  tiles is a plain image in a job with parts, decoded as the pipeline decodes one;
- an upload's **finish**: track ids assigned across the whole video from its stored frames
  (``video.tracks``), a page at a time, or the boxes of an image's tile groups merged.

Memory is bounded whatever the video's length: a few batches of frames in flight, one page of rows.
A database outage past ``JOB_DATABASE_RETRY_SECONDS`` leaves the part to the reaper (its lease expires).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
from celery import Task, shared_task

from config.logs import job_context
from inference.tiles import merge, shift
from jobs.dispatch import new_task_id
from jobs.frames import (
    FRAMES_PER_PAGE,
    FrameRow,
    frame_row,
    frames_after,
    write_frames,
    write_tracks,
    written_between,
)
from jobs.lifecycle import FileResult, JobParams, WorkItem, exception_message
from jobs.messages import PART_TASK
from jobs.parts import (
    FINISH,
    MAX_PART_ATTEMPTS,
    SEGMENT,
    TILE_MERGE_IOU,
    PartEnd,
    PartRun,
    begin_part,
    count_frames,
    end_part,
    mark_part_sent,
    merged_detections,
    renew_part,
    video_window,
)
from storage.tables import Job
from tasks import metrics
from tasks.decoding import DECODE_ERROR, TooManyPixels, decode_item, found, inference_size_on, read_image, scaled
from tasks.outages import DatabaseOutage
from tasks.reporting import publish_progress
from tasks.runtime import WorkerRuntime, runtime_of
from video.frames import Frame, SegmentReader, VideoError
from video.sampling import Window
from video.tracks import TrackInput, assign_tracks

log = logging.getLogger(__name__)

T = TypeVar("T")
# A segment writes its frames at least this often (and renews its lease with each write).
WRITE_SECONDS = 2.0
# Track ids written per statement.
TRACKS_PER_WRITE = 2000


class LeaseLost(Exception):
    """The part's lease is gone: its job was cancelled, or another attempt took the part over."""


@shared_task(name=PART_TASK, bind=True, ignore_result=True)
def run_part(self: Task, job_id: str, part_id: str) -> dict[str, Any]:
    """Run part ``part_id`` of job ``job_id`` if nothing else holds it, and end it."""
    with job_context(job_id):
        runtime = runtime_of(self.app)
        try:
            return PartAttempt(self, runtime, uuid.UUID(part_id)).run()
        except DatabaseOutage as exc:
            log.warning("leaving the part to the reaper: %s", exc, extra={"part_id": part_id})
            return {"part_id": part_id, "status": "left to the reaper"}


def send_parts(app: Any, job_id: uuid.UUID, part_ids: Iterable[uuid.UUID], transaction: Callable[..., Any]) -> None:
    """Send each part's task and record it sent (after the part's row committed: send after commit)."""
    for part_id in part_ids:
        task_id = new_task_id(part_id)
        app.send_task(PART_TASK, args=[str(job_id), str(part_id)], task_id=task_id)
        transaction(lambda s, part_id=part_id, task_id=task_id: mark_part_sent(s, part_id, task_id))


class PartAttempt:
    """One attempt at one part: take its lease, run it, end it, and send what its end queued."""

    def __init__(self, task: Task, runtime: WorkerRuntime, part_id: uuid.UUID) -> None:
        self.task = task
        self.request = task.request
        self.runtime = runtime
        self.settings = runtime.settings
        self.part_id = part_id
        self.lease = runtime.settings.jobs.lease
        self.root = runtime.storage.blobs.root

    def transaction(self, work: Callable[[Any], T]) -> T:
        return self.runtime.transaction(work)

    def run(self) -> dict[str, Any]:
        run = self.transaction(lambda s: begin_part(s, self.part_id, self.lease))
        if run is None:
            log.info("part not started: its job is not running, it ended, or another attempt holds it")
            return {"part_id": str(self.part_id), "status": "skipped"}
        log.info("part started kind=%s number=%d attempt=%d", run.kind, run.number, run.attempts)
        try:
            if run.attempts > MAX_PART_ATTEMPTS:
                end = PartEnd(failed=True, error=f"{describe(run)}: gave up after {MAX_PART_ATTEMPTS} attempts")
            elif run.kind == SEGMENT:
                end = self._segment(run)
            elif run.kind == FINISH:
                end = self._finish(run)
            else:
                end = self._tiles(run)
        except LeaseLost:
            log.info("part stopped: its lease is gone (the job was cancelled, or the part taken over)")
            return {"part_id": str(run.part_id), "status": "stopped"}
        ended, to_send = self.transaction(lambda s: end_part(s, run, end))
        if to_send:
            send_parts(self.task.app, run.job_id, to_send, self.transaction)
        self._report(run, ended)
        status = "failed" if end.failed else "done" if ended else "stopped"
        log.info("part %s kind=%s units_done=%d units_failed=%d", status, run.kind, end.units_done, end.units_failed)
        return {"part_id": str(run.part_id), "status": status}

    # a video's segment

    def _segment(self, run: PartRun) -> PartEnd:
        window = video_window(run.video or {}, run.media, self.settings.media.segment_seconds)
        start, end = run.start_seconds or 0.0, run.end_seconds or 0.0
        done = self.transaction(lambda s: written_between(s, run.upload_id, start, end))
        path = self.root / run.path
        try:
            with SegmentReader(
                path, window, run.number, done, max_pixels=self.settings.worker.max_image_pixels
            ) as reader:
                listed = reader.listed()
                already = len(done & {ref.pts for ref in listed})
                self._renew(run, units_expected=len(listed), units_done=already)
                analysed = self._detect_frames(run, reader.frames(), already)
                missing = reader.missing()
                error = reader.error
        except VideoError as exc:
            return self._unreadable(run, window, exception_message(exc))
        return PartEnd(units_done=already + analysed, units_failed=len(missing), error=error)

    def _unreadable(self, run: PartRun, window: Window, message: str) -> PartEnd:
        """A segment whose file no longer opens as video: its frames, as estimated, are counted as not analysed."""
        rate = (run.video or {}).get("fps") or 0.0
        start, end = run.start_seconds or 0.0, run.end_seconds or 0.0
        frames = max(1, round((end - start) * (window.fps or rate)))
        first, last = round(start * rate), max(round(start * rate), round(end * rate) - 1)
        return PartEnd(units_failed=frames, error=f"frames {first}-{last} could not be decoded: {message}")

    def _detect_frames(self, run: PartRun, frames: Iterator[Frame], already: int) -> int:
        """Predict the frames in batches and write their rows at least every :data:`WRITE_SECONDS`; how many."""
        detector, params = self._model(run)
        batch_size = self.settings.worker.inference_batch_size
        rows: list[FrameRow] = []
        written = 0
        last_write = time.monotonic()
        batch: list[Frame] = []
        for frame in prefetched(frames, 2 * batch_size):
            batch.append(frame)
            if len(batch) < batch_size:
                continue
            rows += self._predict_frames(detector, batch, params)
            batch = []
            if time.monotonic() - last_write >= WRITE_SECONDS:
                written += self._write_frames(run, rows, already + written + len(rows))
                rows, last_write = [], time.monotonic()
        if batch:
            rows += self._predict_frames(detector, batch, params)
        if rows:
            written += self._write_frames(run, rows, already + written + len(rows))
        return written

    def _model(self, run: PartRun) -> tuple[Any, JobParams]:
        """The part's model, loaded once per process by the pool, and what its job asks of it: at the model's one
        size if it has one, which the job then records (``WorkerRuntime.at_run_size``)."""
        detector = self.runtime.models.get(run.model)
        params = JobParams(run.model, run.conf, run.iou, run.imgsz)
        return detector, self.runtime.at_run_size(run.job_id, params)

    def _predict(self, detector: Any, images: list[np.ndarray], params: JobParams) -> list[list[dict[str, Any]]]:
        """One predict call on ``images``, timed and counted as the pipeline counts its batches."""
        started = time.perf_counter()
        predictions = detector.predict(images, params)
        metrics.batch_predicted(params.model, len(images), time.perf_counter() - started)
        return predictions

    def _predict_frames(self, detector: Any, frames: list[Frame], params: JobParams) -> list[FrameRow]:
        predictions = self._predict(detector, [f.pixels for f in frames], params)
        return [
            frame_row(f.ref.pts, f.ref.frame, f.ref.time, found) for f, found in zip(frames, predictions, strict=True)
        ]

    def _write_frames(self, run: PartRun, rows: list[FrameRow], units_done: int) -> int:
        def work(session: Any) -> tuple[int, int | None] | None:
            if not renew_part(session, run, self.lease, units_done=units_done):
                return None
            write_frames(session, run.upload_id, rows)
            count_frames(session, run.job_id)
            job = session.get_one(Job, run.job_id)
            return job.done_frames, job.total_frames

        progress = self.transaction(work)
        if progress is None:
            raise LeaseLost
        publish_progress(self.task, self.request, run.job_id, progress[0], progress[1] or 0)
        return len(rows)

    def _renew(self, run: PartRun, **values: Any) -> None:
        def work(session: Any) -> bool:
            held = renew_part(session, run, self.lease, **values)
            if held and "units_expected" in values:
                count_frames(session, run.job_id)
            return held

        if not self.transaction(work):
            raise LeaseLost

    # an image's tiles

    def _tiles(self, run: PartRun) -> PartEnd:
        detector, params = self._model(run)
        if not run.tiles:
            return self._whole_image(run, detector, params)
        longest = max(run.width or 1, run.height or 1)
        try:
            image = read_image(self.root / run.path, longest, self.settings.worker.max_image_pixels)
        except TooManyPixels as exc:
            return PartEnd(error=str(exc))
        if image is None:
            return PartEnd(error=DECODE_ERROR)
        boxes: list[dict[str, Any]] = []
        batch_size = self.settings.worker.inference_batch_size
        for start in range(0, len(run.tiles), batch_size):
            tiles = run.tiles[start : start + batch_size]
            crops = [np.ascontiguousarray(image.pixels[y1:y2, x1:x2]) for x1, y1, x2, y2 in tiles]
            predictions = self._predict(detector, crops, params)
            for (x1, y1, _, _), found_here in zip(tiles, predictions, strict=True):
                boxes += shift(found_here, x1, y1)
            self._renew(run, units_done=start + len(tiles))
        merged = scaled(merge(boxes, TILE_MERGE_IOU), 1.0, 1.0)
        return PartEnd(units_done=len(run.tiles), detections=merged)

    def _whole_image(self, run: PartRun, detector: Any, params: JobParams) -> PartEnd:
        item = WorkItem(run.upload_id, run.path, run.sha256)
        size = inference_size_on(detector, params)
        decoded = decode_item(self.root, item, size, self.settings.worker.max_image_pixels)
        if isinstance(decoded, FileResult):
            return PartEnd(error=decoded.error)
        detections = self._predict(detector, [decoded.pixels], params)[0]
        return PartEnd(units_done=1, detections=found(item, decoded, detections).detections)

    # an upload's finish

    def _finish(self, run: PartRun) -> PartEnd:
        if run.video is None:
            merged = self.transaction(lambda s: merged_detections(s, run.upload_id))
            return PartEnd(detections=merged)
        frame_rate = run.media.sample_fps or run.video.get("fps") or 30.0
        pending: list[tuple[int, list[int]]] = []
        tracked = 0
        for pts, ids in assign_tracks(self._track_inputs(run), frame_rate):
            pending.append((pts, ids))
            if len(pending) >= TRACKS_PER_WRITE:
                tracked += self._write_tracks(run, pending)
                pending = []
        tracked += self._write_tracks(run, pending)
        return PartEnd(units_done=tracked)

    def _track_inputs(self, run: PartRun) -> Iterator[TrackInput]:
        """The video's frames in time order, read a page per transaction, as the tracker takes them."""
        after: tuple[float, int] | None = None
        while True:
            page = self.transaction(lambda s, after=after: frames_after(s, run.upload_id, after))
            for row in page:
                boxes = np.asarray(row.boxes, dtype=np.float32).reshape(-1, 4)
                yield TrackInput(row.pts, boxes, np.asarray(row.scores, dtype=np.float32), np.asarray(row.classes))
            if len(page) < FRAMES_PER_PAGE:
                return
            after = (page[-1].time, page[-1].pts)

    def _write_tracks(self, run: PartRun, tracks: list[tuple[int, list[int]]]) -> int:
        def work(session: Any) -> bool:
            if not renew_part(session, run, self.lease):
                return False
            write_tracks(session, run.upload_id, tracks)
            return True

        if not self.transaction(work):
            raise LeaseLost
        return len(tracks)

    def _report(self, run: PartRun, ended: bool) -> None:
        """The job's frames so far, and its end when this part's end was the job's (no later part's end can be:
        each is fenced by the job still running)."""
        job = self.transaction(lambda s: s.get_one(Job, run.job_id))
        if job.total_frames is not None:
            publish_progress(self.task, self.request, run.job_id, job.done_frames, job.total_frames)
        if ended and job.is_finished:
            metrics.job_finished(job.status)


def describe(run: PartRun) -> str:
    """The part in words, for its error: a segment by its seconds of video."""
    if run.kind == SEGMENT:
        return f"the frames from {run.start_seconds:g} s to {run.end_seconds:g} s"
    return f"the {run.kind} part {run.number}"


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items`` produced on a thread of their own, at most ``depth`` ahead (a video decodes while a batch is
    predicted: PyAV releases the GIL as it decodes). An exception in the producer is raised here."""
    slots: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def offer(slot: tuple[bool, Any]) -> bool:
        """Put ``slot`` once there is room; False when the consumer stopped meanwhile (it takes nothing more)."""
        while not stop.is_set():
            try:
                slots.put(slot, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((True, item)):
                    return
            offer((False, None))
        except BaseException as exc:
            offer((False, exc))

    producer = threading.Thread(target=produce, name="decode", daemon=True)
    producer.start()
    try:
        while True:
            more, item = slots.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        producer.join()  # the producer stops at its next item: its source (a file) is closed only after that

"""One pipeline per worker process, for every job: take work, decode, predict, write, each stage beside the next.

Why: a worker that decodes a batch, predicts it, writes, acknowledges and only then fetches the
next message leaves its cores (or its GPU) idle during every decode and every write. Here the
stages overlap, and the queues between them are bounded, so a process's memory stays bounded
whatever waits in the broker:

- **take** (this thread): the first job, then, when it leads a round, more ready jobs from
  the :class:`Intake` while fewer than ``WORKER_ROUND_JOBS`` are held and the decoders want
  work. A job alone is a round of one: the same path with no intake. Each image taken gets
  its reuse key (:mod:`jobs.reuse`); unless ``RESULT_REUSE=off``, one query per tenant finds
  the earlier results of the keys taken together, and an image with one takes it (``cached``)
  without being decoded or predicted.
- **decode** (:attr:`Stages.decode_threads` threads; OpenCV and Pillow release the GIL): each
  image is read and decoded while the batch before it is predicted, at most
  :attr:`Stages.decode_ahead` batches ahead (:mod:`tasks.decoding`).
- **predict** (this thread): batches of the pace's size (:mod:`tasks.pacing`), images of one
  model and parameters, across jobs. A call that raises is redone job by job, and only a job
  whose own call raises fails: a poison job fails alone.
- **write** (one thread, at most :attr:`Stages.writes_queued` writes waiting): the jobs whose
  images are all predicted end in one transaction (``finish_jobs``, fenced by each lease), the
  others write their results and progress on the pace's 2 s budget; only after a write commits
  does the :class:`Reporter` acknowledge messages and publish events.

A job whose lease is lost (cancelled, or taken over) stops at the next batch boundary and writes
nothing more; a heartbeat renews every held lease (:mod:`tasks.heartbeat`). Outages are ridden out
in place by the stage that meets them (:mod:`tasks.outages`); past the budget,
:class:`~tasks.outages.DatabaseOutage` ends the run and the caller leaves the jobs to the reaper.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from celery.exceptions import SoftTimeLimitExceeded

from jobs.lifecycle import (
    FileResult,
    Finishing,
    JobParams,
    JobRun,
    Provenance,
    WorkItem,
    exception_message,
    fail_job,
    finish_jobs,
    record_results,
)
from jobs.reuse import Reusable, reusable_results, reuse_key
from tasks import metrics
from tasks.decoding import Decoded, decode_item, found, inference_size_on
from tasks.heartbeat import Heartbeat
from tasks.model_pool import ModelUnavailable
from tasks.outages import ride_out_outages
from tasks.pacing import Pace

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from config import Settings
    from inference.backends import Detector

log = logging.getLogger(__name__)

T = TypeVar("T")
# A round stops taking more jobs after this long, so a leader's task (and its message) ends in
# minutes however deep the queue; the next message starts the next round.
INTAKE_SECONDS = 60.0


@dataclass(frozen=True)
class Stages:
    """How deep each stage runs: chosen by measurement (docs/performance.md, "One pipeline per worker process")."""

    decode_threads: int = 2
    # Batches decoded (or decoding) beyond the one being predicted.
    decode_ahead: int = 1
    # Writes waiting for the writer before the predict stage waits for it.
    writes_queued: int = 2


SUCCEEDED, FAILED, STOPPED = "succeeded", "failed", "stopped"


@dataclass(eq=False)
class Member:
    """One job in the pipeline: its task, its attempt, its message (``None`` for the task's own job)."""

    task_id: str
    run: JobRun
    message: Any = None
    held: list[FileResult] = field(default_factory=list)
    failure: tuple[str, str] | None = None
    outcome: str | None = None
    left: int = field(init=False)  # images not predicted yet
    done: int = field(init=False)  # images with a written result

    def __post_init__(self) -> None:
        self.left = len(self.run.pending)
        self.done = self.run.done

    @property
    def job_id(self) -> uuid.UUID:
        return self.run.job_id

    def add(self, result: FileResult) -> None:
        self.held.append(result)
        self.left -= 1

    def take_held(self) -> list[FileResult]:
        held, self.held = self.held, []
        return held


class Intake(Protocol):
    """Where a round's leader takes more jobs: each one's attempt begun, its message held until its end."""

    def take(self, count: int) -> list[Member]:
        """Up to ``count`` more members, from what is ready now."""
        ...


class Reporter(Protocol):
    """What follows a committed write: acknowledgements, task events, progress and metrics."""

    def ended(self, members: Sequence[Member]) -> None:
        """``members`` ended (their outcome set) in a write that committed."""
        ...

    def progressed(self, member: Member) -> None:
        """``member``'s results so far were written (``member.done``)."""
        ...


class Models(Protocol):
    def get(self, name: str) -> Detector: ...


Transaction = Callable[[Callable[["Session"], T]], T]


@dataclass(eq=False)
class Entry:
    """One image on its way through the stages, and what its result will say produced it."""

    member: Member
    item: WorkItem
    size: int
    provenance: Provenance
    decoded: Future[Decoded | FileResult] | None = None


@dataclass
class Write:
    """One write: members that end, and members whose results so far are written, each with its results."""

    ending: list[tuple[Member, list[FileResult]]]
    progress: list[tuple[Member, list[FileResult]]]


class Pipeline:
    """Runs a round of jobs through the stages until each has ended, failed or stopped."""

    def __init__(
        self,
        settings: Settings,
        models: Models,
        root: Path,
        transaction: Transaction,
        reporter: Reporter,
        intake: Intake | None = None,
        stages: Stages = Stages(),
    ) -> None:
        self.settings = settings
        self.models = models
        self.root = root
        self.transaction = transaction
        self.reporter = reporter
        self.intake = intake
        self.stages = stages
        worker = settings.worker
        self.pace = Pace(worker.inference_batch_size)
        self.held_at_most = worker.round_jobs
        self.members: list[Member] = []
        self.active: list[Member] = []
        self.queued: deque[Entry] = deque()
        self.ahead: deque[Entry] = deque()
        self.detectors: dict[JobParams, Detector | ModelUnavailable] = {}
        self.taking_until = time.monotonic() + INTAKE_SECONDS
        self.decode_seconds = 0.0
        self.predict_seconds = 0.0
        self._lock = threading.Lock()

    def run(self, first: Member) -> list[Member]:
        """Every job taken, each with its outcome once the run returns."""
        started = time.perf_counter()
        with (
            Heartbeat(self.transaction, self.settings.jobs.lease) as self.heartbeat,
            Writer(self._write, self.stages.writes_queued) as self.writer,
            ThreadPoolExecutor(self.stages.decode_threads, thread_name_prefix="decode") as self.decoders,
        ):
            self._admit([first])
            while True:
                self._fill()
                batch = self._take_batch()
                self._fill()  # the next batch decodes while this one is predicted
                if batch:
                    self._predict(batch)
                self._hand_over()
                if not batch and not self.active:
                    break
        images = sum(len(m.run.pending) for m in self.members)
        log.info(
            "round finished jobs=%d images=%d seconds=%.3f decode_cpu_seconds=%.3f predict_seconds=%.3f "
            "write_cpu_seconds=%.3f",
            len(self.members),
            images,
            time.perf_counter() - started,
            self.decode_seconds,
            self.predict_seconds,
            self.writer.cpu_seconds,
        )
        return self.members

    # take

    def _admit(self, members: Sequence[Member]) -> None:
        entries: list[Entry] = []
        for member in members:
            self.members.append(member)
            self.active.append(member)
            self.heartbeat.hold(member.job_id, member.run.lease_token)
            detector = self._detector(member.run.params)
            if isinstance(detector, ModelUnavailable):
                member.failure = ("model_unavailable", str(detector))
                continue
            params, size = member.run.params, inference_size_on(detector, member.run.params)
            digest, backend, precision = detector.weights_sha256, detector.backend, detector.precision
            for item in member.run.pending:
                key = reuse_key(item.sha256, digest, params.conf, params.iou, size, backend, precision)
                entries.append(Entry(member, item, size, Provenance(key, digest, backend, precision)))
        hits = self._reusable(entries) if self.settings.files.result_reuse != "off" else {}
        for entry in entries:
            hit = hits.get((entry.member.run.tenant_id, entry.provenance.reuse_key))
            if hit is None:
                self.queued.append(entry)
            else:
                cached = replace(entry.provenance, cached=True)
                entry.member.add(
                    FileResult(entry.item.upload_id, hit.width, hit.height, hit.detections, provenance=cached)
                )

    def _reusable(self, entries: Sequence[Entry]) -> dict[tuple[uuid.UUID | None, str], Reusable]:
        """The earlier results of the entries' keys, by tenant and key: one query per tenant; counted."""
        keys: dict[uuid.UUID | None, set[str]] = {}
        for entry in entries:
            if entry.provenance.reuse_key is not None:
                keys.setdefault(entry.member.run.tenant_id, set()).add(entry.provenance.reuse_key)
        if not keys:
            return {}

        def lookup(session: Session) -> dict[tuple[uuid.UUID | None, str], Reusable]:
            found = {}
            for tenant_id, tenant_keys in keys.items():
                for key, reusable in reusable_results(session, tenant_id, tenant_keys).items():
                    found[(tenant_id, key)] = reusable
            return found

        hits = self.transaction(lookup)
        keyed = [e for e in entries if e.provenance.reuse_key is not None]
        reused = sum((e.member.run.tenant_id, e.provenance.reuse_key) in hits for e in keyed)
        metrics.results_looked_up(reused, len(keyed) - reused)
        return hits

    def _take_more(self) -> bool:
        """Take more jobs from the intake when it is open and fewer than the most are held."""
        room = self.held_at_most - len(self.active)
        if self.intake is None or room <= 0:
            return False
        if time.monotonic() > self.taking_until:
            self.intake = None
            return False
        taken = self.intake.take(min(room, self.settings.worker.inference_batch_size))
        if not taken and not self.active:  # nothing ready and nothing in hand: the round ends
            self.intake = None
        self._admit(taken)
        return bool(taken)

    def _detector(self, params: JobParams) -> Detector | ModelUnavailable:
        if params not in self.detectors:
            try:
                self.detectors[params] = self.models.get(params.model)
            except ModelUnavailable as exc:
                self.detectors[params] = exc
        return self.detectors[params]

    # decode

    def _fill(self) -> None:
        """Keep the decoders busy: images of held jobs submitted, up to :attr:`Stages.decode_ahead` batches."""
        wanted = self.stages.decode_ahead * self.pace.next_size()
        while len(self.ahead) < wanted:
            if not self.queued and not self._take_more():
                return
            if not self.queued:  # the jobs taken had no image to decode
                continue
            entry = self.queued.popleft()
            if self._running(entry.member):
                entry.decoded = self.decoders.submit(self._decode, entry)
                self.ahead.append(entry)

    def _decode(self, entry: Entry) -> Decoded | FileResult:
        started = time.thread_time()
        max_pixels = self.settings.worker.max_image_pixels

        def decode() -> Decoded | FileResult:
            return decode_item(self.root, entry.item, entry.size, max_pixels)

        try:
            return ride_out_outages(decode, self.settings.jobs.database_retry_seconds)
        finally:
            with self._lock:
                self.decode_seconds += time.thread_time() - started

    # predict

    def _running(self, member: Member) -> bool:
        return member.failure is None and member.outcome is None and member.job_id not in self.heartbeat.lost

    def _take_batch(self) -> list[Entry]:
        """The next batch: up to the pace's size of decoded images, of one model and parameters."""
        batch: list[Entry] = []
        size = self.pace.next_size()
        while self.ahead and len(batch) < size:
            entry = self.ahead[0]
            if batch and entry.member.run.params != batch[0].member.run.params:
                break
            self.ahead.popleft()
            if self._running(entry.member):
                batch.append(entry)
        return batch

    def _predict(self, batch: Sequence[Entry]) -> None:
        """Each image's result: an error for one not decoded, detections for the rest."""
        images: list[tuple[Entry, Decoded]] = []
        for entry in batch:
            assert entry.decoded is not None
            decoded = entry.decoded.result()  # raises DatabaseOutage when the volume stayed away
            if isinstance(decoded, FileResult):
                entry.member.add(decoded)
            else:
                images.append((entry, decoded))
        if not images:
            return
        params = batch[0].member.run.params
        detector = self.detectors[params]
        assert not isinstance(detector, ModelUnavailable)
        try:
            self._predict_together(detector, images, params)
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            if len({entry.member for entry, _ in images}) == 1:
                self._fail(images[0][0].member, exc)
                return
            log.warning("a shared predict call failed: predicting its jobs one by one", exc_info=True)
            for member in dict.fromkeys(entry.member for entry, _ in images):
                try:
                    self._predict_together(detector, [(e, d) for e, d in images if e.member is member], params)
                except SoftTimeLimitExceeded:
                    raise
                except Exception as exc:
                    self._fail(member, exc)

    def _predict_together(self, detector: Detector, images: Sequence[tuple[Entry, Decoded]], params: JobParams) -> None:
        started = time.perf_counter()
        predictions = detector.predict([decoded.pixels for _, decoded in images], params)
        seconds = time.perf_counter() - started
        self.predict_seconds += seconds
        self.pace.predicted(len(images), seconds)
        metrics.batch_predicted(params.model, len(images), seconds)
        for (entry, decoded), detections in zip(images, predictions, strict=True):
            entry.member.add(replace(found(entry.item, decoded, detections), provenance=entry.provenance))

    def _fail(self, member: Member, exc: Exception) -> None:
        log.warning("a job's predict call failed", exc_info=exc, extra={"job_id": str(member.job_id)})
        member.failure = ("internal_error", exception_message(exc))

    # write

    def _hand_over(self) -> None:
        """Give the writer the jobs that end, and the results so far of the others when the pace says so."""
        self.writer.raise_error()
        ending = [m for m in self.active if m.left == 0 or not self._running(m)]
        going_on = [m for m in self.active if m not in ending]
        remaining = sum(m.left for m in going_on)
        progress = [m for m in going_on if m.held] if self.pace.write_now(remaining) else []
        if not ending and not progress:
            return
        self.active = going_on
        self.writer.put(Write([(m, m.take_held()) for m in ending], [(m, m.take_held()) for m in progress]))
        if progress:
            self.pace.wrote()

    def _write(self, write: Write) -> None:
        """One transaction for ``write`` (in the writer's thread), then the reporter."""
        lease = self.settings.jobs.lease
        lost = self.heartbeat.lost

        def work(session: Session) -> tuple[set[uuid.UUID], set[uuid.UUID], dict[uuid.UUID, int | None]]:
            finishing = [
                Finishing(m.job_id, m.run.lease_token, results)
                for m, results in write.ending
                if m.failure is None and m.job_id not in lost
            ]
            ended = finish_jobs(session, finishing)
            failed = {
                m.job_id
                for m, _ in write.ending
                if m.failure is not None and fail_job(session, m.job_id, *m.failure, token=m.run.lease_token)
            }
            recorded = {
                m.job_id: record_results(session, m.job_id, m.run.lease_token, results, lease)
                for m, results in write.progress
            }
            return ended, failed, recorded

        ended, failed, recorded = self.transaction(work)
        for member, _ in write.ending:
            member.outcome = SUCCEEDED if member.job_id in ended else FAILED if member.job_id in failed else STOPPED
            self.heartbeat.release(member.job_id)
        for member, _ in write.progress:
            done = recorded[member.job_id]
            if done is None:
                self.heartbeat.mark_lost(member.job_id)
            else:
                member.done = done
                self.reporter.progressed(member)
        if write.ending:
            self.reporter.ended([member for member, _ in write.ending])


class Writer:
    """The write stage: a thread that runs writes in order, with at most ``depth`` waiting.

    A write that raises (an outage past its budget) stops the stage: the predict stage meets the
    error at its next hand-over. Leaving the block on an error abandons the writes still waiting.
    """

    def __init__(self, write: Callable[[Write], None], depth: int) -> None:
        self._write = write
        self._writes: queue.Queue[Write | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.cpu_seconds = 0.0
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="writes", daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        if error_type is not None:
            self._abandoned = True
            while not self._writes.empty():
                self._writes.get_nowait()
        self._writes.put(None)
        self._thread.join(timeout=None if error_type is None else 30)
        if error_type is None:
            self.raise_error()

    def put(self, write: Write) -> None:
        """Queue ``write``, waiting while ``depth`` writes wait; raise the stage's error if it has one."""
        while True:
            self.raise_error()
            try:
                self._writes.put(write, timeout=0.5)
                return
            except queue.Full:
                continue

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while (write := self._writes.get()) is not None:
            if self.error is not None or self._abandoned:
                continue
            started = time.thread_time()
            try:
                self._write(write)
            except BaseException as exc:
                self.error = exc
            self.cpu_seconds += time.thread_time() - started

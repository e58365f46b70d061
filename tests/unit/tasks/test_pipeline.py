"""The worker's pipeline without a broker: real PostgreSQL, real image files and decoding, a stand-in model.

The model is the one part replaced (:class:`StandInModel`): it is what runs on a GPU in production,
and here it records each call, can take time, and can fail on a marked image (a poison job). Jobs come
from :class:`ListIntake`, which begins their attempts in the database as the broker-fed intake does.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from config import Settings
from harness.images import image_bytes
from jobs.lifecycle import JobParams, begin_attempt, cancel_job
from storage import Storage
from storage.tables import Result, Upload
from tasks.heartbeat import Heartbeat
from tasks.model_pool import ModelUnavailable
from tasks.outages import DatabaseOutage
from tasks.pipeline import FAILED, STOPPED, SUCCEEDED, Member, Pipeline, Stages
from tests.helpers import LEASE, add_key, create_queued_job, job_state

# An image this wide makes the stand-in model raise: the poison.
POISON_WIDTH = 13


class StandInModel:
    """A detector standing in for the GPU's: one box per image, ``seconds`` per call, raising on a poison image."""

    backend, precision, task, names, stride, imgsz = "stand-in", "fp32", "detect", {0: "square"}, 32, 320
    weights_sha256: str | None = None

    def __init__(self, seconds: float = 0.0, on_call: Callable[[int], None] | None = None) -> None:
        self.seconds = seconds
        self.on_call = on_call
        self.calls: list[tuple[float, list[int]]] = []

    def predict(self, images: Sequence[Any], options: Any) -> list[list[dict[str, Any]]]:
        self.calls.append((time.monotonic(), [image.shape[1] for image in images]))
        if self.on_call is not None:
            self.on_call(len(self.calls))
        time.sleep(self.seconds)
        if any(image.shape[1] == POISON_WIDTH for image in images):
            raise RuntimeError("this image kills the model")
        box = {"x1": 1.0, "y1": 1.0, "x2": 5.0, "y2": 5.0}
        return [[{"name": "square", "class": 0, "confidence": 0.9, "box": box}] for _ in images]


class Models:
    def __init__(self, model: StandInModel) -> None:
        self.model = model

    def get(self, name: str) -> StandInModel:
        if name == "withdrawn":
            raise ModelUnavailable("model 'withdrawn' is not configured on this worker")
        return self.model


class Reporter:
    """Records what the write stage reports, and when."""

    def __init__(self) -> None:
        self.ends: list[tuple[float, list[Member]]] = []
        self.progress: list[int] = []

    def ended_members(self) -> list[Member]:
        return [member for _, members in self.ends for member in members]

    def ended(self, members: Sequence[Member]) -> None:
        self.ends.append((time.monotonic(), list(members)))

    def progressed(self, member: Member) -> None:
        self.progress.append(member.done)


class ListIntake:
    """Jobs from a list, each attempt begun in the database as the broker-fed intake begins it."""

    def __init__(self, store: Storage, job_ids: list[uuid.UUID]) -> None:
        self.store = store
        self.waiting = list(job_ids)
        self.taken: list[int] = []

    def take(self, count: int) -> list[Member]:
        taken, self.waiting = self.waiting[:count], self.waiting[count:]
        self.taken.append(len(taken))
        return [member(self.store, job_id) for job_id in taken]


def member(store: Storage, job_id: uuid.UUID) -> Member:
    with store.database.transaction() as session:
        run = begin_attempt(session, job_id, LEASE)
    assert run is not None
    return Member(f"task-{job_id}", run)


def settings(batch: int = 2, round_jobs: int = 8, reuse: str = "tenant") -> Settings:
    return Settings.from_env(
        {"INFERENCE_BATCH_SIZE": str(batch), "WORKER_ROUND_JOBS": str(round_jobs), "RESULT_REUSE": reuse}
    )


def transaction_on(store: Storage) -> Callable[[Callable[[Any], Any]], Any]:
    def transaction(work: Callable[[Any], Any]) -> Any:
        with store.database.transaction() as session:
            return work(session)

    return transaction


def pipeline(
    store: Storage,
    model: StandInModel,
    reporter: Reporter,
    intake: ListIntake | None = None,
    batch: int = 2,
    round_jobs: int = 8,
    transaction: Callable[[Callable[[Any], Any]], Any] | None = None,
    reuse: str = "tenant",
) -> Pipeline:
    return Pipeline(
        settings(batch, round_jobs, reuse),
        Models(model),
        store.blobs.root,
        transaction or transaction_on(store),
        reporter,
        intake,
        Stages(decode_threads=2, decode_ahead=1, writes_queued=2),
    )


def jobs_of(
    store: Storage, *sizes: int, model: str = "default", widths: dict[int, int] | None = None
) -> list[uuid.UUID]:
    """A queued job per size, of that many distinct PNGs 20 px wide; the first image of the k-th job is
    ``widths.get(k, 20)`` px wide."""
    made = []
    for number, size in enumerate(sizes):
        images = [
            image_bytes(20 if n else (widths or {}).get(number, 20), 16, seed=100 * number + n) for n in range(size)
        ]
        made.append(create_queued_job(store, *images, params=JobParams(model=model)))
    return made


def results(store: Storage, job_id: uuid.UUID) -> int:
    with store.database.transaction() as session:
        return session.scalar(select(func.count()).select_from(Result).where(Result.job_id == job_id)) or 0


def test_a_round_ends_every_job_with_one_result_per_image_in_batches_of_one_model(store: Storage) -> None:
    first, *rest = jobs_of(store, 1, 2, 3, 1)
    model, reporter = StandInModel(), Reporter()
    members = pipeline(store, model, reporter, ListIntake(store, rest)).run(member(store, first))
    assert [m.outcome for m in members] == [SUCCEEDED] * 4
    for job_id, size in zip([first, *rest], [1, 2, 3, 1], strict=True):
        assert job_state(store, job_id).status == "succeeded" and results(store, job_id) == size
    assert sum(len(widths) for _, widths in model.calls) == 7
    assert max(len(widths) for _, widths in model.calls) <= 2, "a call takes at most the batch size"
    assert {m.job_id for m in reporter.ended_members()} == {first, *rest}, "each end reported once, after its write"


def test_the_next_batch_decodes_while_one_is_predicted_and_no_more_is_held(store: Storage) -> None:
    first, *rest = jobs_of(store, 1, 1, 1, 1, 1, 1, 1, 1)
    held: list[tuple[int, int]] = []

    def look(call: int) -> None:
        ahead = run.ahead
        held.append((len(ahead), sum(entry.decoded is not None for entry in ahead)))

    model, reporter = StandInModel(on_call=look), Reporter()
    run = pipeline(store, model, reporter, ListIntake(store, rest))
    run.run(member(store, first))
    assert sum(len(widths) for _, widths in model.calls) == 8
    # The pace starts at one image a call, then the batch size (2): while a call predicts, the decoders
    # hold the next one batch (Stages.decode_ahead), submitted, and never more.
    assert all(submitted == waiting for waiting, submitted in held), held
    assert max(waiting for waiting, _ in held) == 2 and all(waiting <= 2 for waiting, _ in held), held
    assert held[1][0] == 2, "the second call's successor was already decoding"


def test_writes_run_beside_the_next_predict_calls(store: Storage) -> None:
    first, *rest = jobs_of(store, 2, 2, 2, 2)
    writes: list[tuple[float, float]] = []
    plain = transaction_on(store)

    def slow_transaction(work: Callable[[Any], Any]) -> Any:
        if threading.current_thread().name != "writes":
            return plain(work)
        started = time.monotonic()
        time.sleep(0.3)
        try:
            return plain(work)
        finally:
            writes.append((started, time.monotonic()))

    model, reporter = StandInModel(seconds=0.05), Reporter()
    members = pipeline(store, model, reporter, ListIntake(store, rest), transaction=slow_transaction).run(
        member(store, first)
    )
    assert [m.outcome for m in members] == [SUCCEEDED] * 4
    calls = [at for at, _ in model.calls]
    assert any(start < at < end for start, end in writes for at in calls), (writes, calls)


def test_a_poison_job_fails_alone_and_its_batch_mates_succeed(store: Storage) -> None:
    first, poison, mate = jobs_of(store, 1, 1, 1, widths={1: POISON_WIDTH})
    model, reporter = StandInModel(), Reporter()
    run = pipeline(store, model, reporter, ListIntake(store, [poison, mate]), batch=4)
    outcomes = {m.job_id: m.outcome for m in run.run(member(store, first))}
    assert outcomes == {first: SUCCEEDED, poison: FAILED, mate: SUCCEEDED}
    poisoned = job_state(store, poison)
    assert poisoned.error_code == "internal_error" and "kills the model" in poisoned.error_message
    assert results(store, poison) == 0 and results(store, first) == results(store, mate) == 1
    assert any(len(widths) > 1 and POISON_WIDTH in widths for _, widths in model.calls), "it shared a call first"


def test_a_job_whose_model_cannot_load_fails_alone(store: Storage) -> None:
    (first,) = jobs_of(store, 2)
    (withdrawn,) = jobs_of(store, 1, model="withdrawn")
    reporter = Reporter()
    members = pipeline(store, StandInModel(), reporter, ListIntake(store, [withdrawn])).run(member(store, first))
    assert {m.job_id: m.outcome for m in members} == {first: SUCCEEDED, withdrawn: FAILED}
    assert job_state(store, withdrawn).error_code == "model_unavailable"


def test_a_job_cancelled_while_predicted_stops_at_the_batch_boundary_and_writes_nothing(store: Storage) -> None:
    (job_id,) = jobs_of(store, 8)

    def cancel_on_second_call(call: int) -> None:
        if call == 2:
            with store.database.transaction() as session:
                assert cancel_job(session, job_id)
            run.heartbeat.renew()  # the heartbeat's next tick

    model, reporter = StandInModel(on_call=cancel_on_second_call), Reporter()
    run = pipeline(store, model, reporter)
    (stopped,) = run.run(member(store, job_id))
    assert stopped.outcome == STOPPED and job_state(store, job_id).status == "cancelled"
    assert len(model.calls) == 2, "no call after the one during which it was cancelled"
    assert results(store, job_id) == 0


def test_an_outage_past_its_budget_ends_the_run_and_writes_nothing_more(store: Storage) -> None:
    first, *rest = jobs_of(store, 1, 1, 1, 1, 1)
    plain = transaction_on(store)

    def database_gone_for_writes(work: Callable[[Any], Any]) -> Any:
        if threading.current_thread().name == "writes":
            raise DatabaseOutage("still unavailable after 60s")
        return plain(work)

    model, reporter = StandInModel(), Reporter()
    run = pipeline(store, model, reporter, ListIntake(store, rest), transaction=database_gone_for_writes)
    with pytest.raises(DatabaseOutage):
        run.run(member(store, first))
    assert reporter.ends == [] and all(results(store, j) == 0 for j in [first, *rest])
    assert all(job_state(store, j).status == "running" for j in [first, *rest]), "their leases stand for the reaper"


def test_a_round_holds_at_most_round_jobs_at_once(store: Storage) -> None:
    first, *rest = jobs_of(store, *[1] * 9)
    held: list[int] = []
    model, reporter = StandInModel(on_call=lambda _: held.append(len(run.active))), Reporter()
    intake = ListIntake(store, rest)
    run = pipeline(store, model, reporter, intake, round_jobs=2)
    members = run.run(member(store, first))
    assert len(members) == 9 and all(m.outcome == SUCCEEDED for m in members)
    assert max(held) == 2, held


def test_the_heartbeat_reports_a_lost_lease_and_not_a_released_one(store: Storage) -> None:
    kept, cancelled, ended = jobs_of(store, 1, 1, 1)
    runs = {job_id: member(store, job_id).run for job_id in (kept, cancelled, ended)}
    heartbeat = Heartbeat(transaction_on(store), timedelta(minutes=5))
    for run in runs.values():
        heartbeat.hold(run.job_id, run.lease_token)
    with store.database.transaction() as session:
        cancel_job(session, cancelled)
        cancel_job(session, ended)
    heartbeat.release(ended)
    heartbeat.renew()
    assert heartbeat.lost == {cancelled}


def reuse_counts() -> tuple[float, float]:
    def value(outcome: str) -> float:
        return REGISTRY.get_sample_value("yolo_worker_result_reuse_total", {"outcome": outcome}) or 0.0

    return value("hit"), value("miss")


def stored_results(store: Storage, job_id: uuid.UUID) -> list[Result]:
    with store.database.transaction() as session:
        query = select(Result).join(Upload, Upload.id == Result.upload_id).where(Result.job_id == job_id)
        return list(session.scalars(query.order_by(Upload.position)))


def test_an_image_with_a_result_of_the_same_key_takes_it_without_decode_or_predict(store: Storage) -> None:
    tenant_id = add_key(store, f"reuse-{uuid.uuid4().hex[:8]}").tenant_id
    stranger = add_key(store, f"reuse-{uuid.uuid4().hex[:8]}").tenant_id
    seen, new = image_bytes(24, 16, seed=9001), image_bytes(28, 16, seed=9002)
    model = StandInModel()
    model.weights_sha256 = "a" * 64

    def run(*images: bytes, reuse: str = "tenant", tenant: uuid.UUID = tenant_id) -> list[Result]:
        job_id = create_queued_job(store, *images, tenant_id=tenant)
        model.calls.clear()
        (done,) = pipeline(store, model, Reporter(), reuse=reuse).run(member(store, job_id))
        assert done.outcome == SUCCEEDED
        return stored_results(store, job_id)

    first = run(seen)
    assert [r.cached for r in first] == [False] and first[0].reuse_key is not None
    assert (first[0].weights_sha256, first[0].backend, first[0].precision) == ("a" * 64, "stand-in", "fp32")
    hits, misses = reuse_counts()
    second = run(seen, new, seen)
    assert [image_widths for _, image_widths in model.calls] == [[28]], "only the new image is decoded and predicted"
    assert [r.cached for r in second] == [True, False, True]
    assert second[0].detections == first[0].detections and (second[0].width, second[0].height) == (24, 16)
    assert second[0].reuse_key == first[0].reuse_key
    assert reuse_counts() == (hits + 2, misses + 1)

    assert [r.cached for r in run(seen, reuse="off")] == [False] and len(model.calls) == 1
    assert reuse_counts() == (hits + 2, misses + 1), "off: no lookup, nothing counted"
    assert [r.cached for r in run(seen, tenant=stranger)] == [False], "another tenant's result is not taken"
    model.weights_sha256 = "b" * 64  # new weights under the same name
    renewed = run(seen)
    assert [r.cached for r in renewed] == [False] and renewed[0].reuse_key != first[0].reuse_key
    model.weights_sha256 = None  # weights built from a YAML name: random, never reused
    assert [r.reuse_key for r in run(seen)] == [None]

"""The model registry in PostgreSQL: YOLO_MODELS seeding it, admins registering and retiring models (and what a
registration may read of the server), jobs choosing from it, and the size a job records, fixed sizes included."""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from accounts.keys import ensure_tenant
from config import Settings
from config.paths import BUNDLED_MODEL
from files.errors import FileGone
from files.ownership import add_tenant_file
from harness.images import image_bytes
from jobs.catalog import (
    LoadedModel,
    ModelRetired,
    UnknownModel,
    model_classes,
    model_for_job,
    record_loaded_model,
    registered_models,
    run_size,
    seed_registry,
)
from jobs.errors import UnknownFiles
from jobs.lifecycle import JobParams, begin_attempt, record_run_size
from jobs.registry import (
    ConfiguredModel,
    InvalidModelName,
    ModelExists,
    ModelNotFound,
    ModelRegistry,
    NotWeights,
    Weights,
    WeightsNotAllowed,
    WeightsNotFound,
    register_model,
    retire_model,
)
from jobs.service import JobService
from storage import Storage
from storage.files import store_incoming
from storage.locks import lock_digests
from storage.media import WeightsInfo
from storage.tables import Job, ModelRecord, StoredFile, Upload
from tests.helpers import create_queued_job

T = TypeVar("T")
LEASE = timedelta(minutes=5)


# The least an ONNX model is, as its top-level protobuf fields: ir_version 8 and an empty graph.
ONNX = b"\x08\x08\x3a\x00"


def zipped(content: bytes = b"tensors") -> bytes:
    """Bytes in the form PyTorch saves weights in (a zip archive)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/data.pkl", content)
    return buffer.getvalue()


def zipped_without_pickle() -> bytes:
    """A zip archive that is not PyTorch's: no data.pkl."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", b"notes")
    return buffer.getvalue()


def in_transaction(store: Storage, work: Callable[[Session], T]) -> T:
    with store.database.transaction() as session:
        return work(session)


def settings_of(store: Storage, **env: str) -> Settings:
    return Settings.from_env({"STORAGE_ROOT": str(store.blobs.root), **env})


def rows(store: Storage) -> dict[str, ModelRecord]:
    return in_transaction(store, lambda s: {r.name: r for r in s.scalars(select(ModelRecord))})


def test_yolo_models_seeds_the_registry_idempotently(store: Storage) -> None:
    both = settings_of(store, YOLO_MODELS="coco=/m/coco.pt,plain=/m/plain.pt")
    older = LoadedModel("coco", "/m/old.pt", "a" * 64, "detect", {"0": "cat"})
    loaded = LoadedModel("coco", "/m/coco.pt", None, "detect", {"0": "person"}, 32, 640)
    for report in (older, loaded):  # an earlier release's reports, of a model no one registered: the latest wins
        in_transaction(store, lambda s, report=report: record_loaded_model(s, report))
    assert (rows(store)["coco"].weights, rows(store)["coco"].weights_sha256) == ("/m/coco.pt", None)
    for _ in range(2):
        in_transaction(store, lambda s: seed_registry(s, both))
    seeded = rows(store)
    assert {name: (r.weights, r.source, r.retired_at) for name, r in seeded.items()} == {
        "shapes": (str(BUNDLED_MODEL), "settings", None),
        "coco": ("/m/coco.pt", "settings", None),
        "plain": ("/m/plain.pt", "settings", None),
    }
    assert seeded["coco"].loaded_at is not None, "the report of the same weights still counts"

    moved = settings_of(store, YOLO_MODELS="coco=/m/coco-v2.pt")
    in_transaction(store, lambda s: seed_registry(s, moved))
    after = rows(store)
    assert after["coco"].weights == "/m/coco-v2.pt" and after["coco"].loaded_at is None, "a report of other weights"
    assert after["coco"].classes == {"0": "person"}, "old jobs keep their class names until a worker reloads"
    assert after["plain"].retired_at is not None, "left out of YOLO_MODELS: retired"
    in_transaction(store, lambda s: seed_registry(s, both))
    assert rows(store)["plain"].retired_at is None, "listed again: active again"


def test_jobs_choose_from_the_registry(store: Storage) -> None:
    settings = settings_of(store, YOLO_MODELS="coco=/m/coco.pt")
    in_transaction(store, lambda s: seed_registry(s, settings))
    assert in_transaction(store, lambda s: model_for_job(s, "default")).name == "shapes", "an alias"
    with pytest.raises(UnknownModel, match=r"Unknown model 'nope'; known models: coco, shapes\."):
        in_transaction(store, lambda s: model_for_job(s, "nope"))
    in_transaction(store, lambda s: seed_registry(s, settings_of(store)))  # coco left out of YOLO_MODELS
    with pytest.raises(ModelRetired, match=r"Model 'coco' was retired on .*; known models: shapes\."):
        in_transaction(store, lambda s: model_for_job(s, "coco"))
    listed = in_transaction(store, lambda s: [(m.name, m.retired_at is None) for m in registered_models(s, "shapes")])
    assert listed == [("shapes", True), ("coco", False)], "the default first; retired ones listed too"


def test_a_job_records_the_size_its_model_runs_at(store: Storage) -> None:
    weights = store.blobs.root / "models" / "fixed.onnx"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(ONNX)
    settings = settings_of(store, YOLO_MODELS="coco=/m/coco.pt,plain=/m/plain.pt")
    registry = ModelRegistry(settings, store)
    in_transaction(store, lambda s: registry.register(s, "fixed", Weights(str(weights)), None, None))

    def size(name: str, asked: int | None) -> int | None:
        return in_transaction(store, lambda s: registry.for_job(s, name).size_for(asked))

    assert [size("coco", asked) for asked in (None, 100)] == [None, 100], "as asked while no worker reported it"
    reports = [
        LoadedModel("coco", "/m/coco.pt", None, "detect", {}, 32, 640),
        LoadedModel("fixed", str(weights), None, "detect", {}, 32, 384, fixed_imgsz=384),
        LoadedModel("shapes", "/other/weights.pt", None, "detect", {}, 32, 320),  # not the registry's weights
        LoadedModel("plain", "/m/plain.pt", None, "detect", {}),  # no stride reported
    ]
    for report in reports:
        in_transaction(store, lambda s, report=report: record_loaded_model(s, report))
    assert [size("coco", asked) for asked in (None, 100, 640)] == [640, 128, 640], "rounded up to the stride"
    assert [size("fixed", asked) for asked in (None, 100, 640)] == [384, 384, 384], "an export at one size"
    assert size("shapes", 100) == 100, "the report is of other weights: as asked"
    assert [size("plain", asked) for asked in (None, 100)] == [None, 100], "as asked while the stride is unknown"
    assert rows(store)["shapes"].weights == str(BUNDLED_MODEL), "a report never moves a registered model"


def test_a_worker_that_finds_a_fixed_size_late_records_it(store: Storage) -> None:
    settings = settings_of(store)
    in_transaction(store, lambda s: seed_registry(s, settings))
    asked = create_queued_job(store, image_bytes(seed=1), params=JobParams(model="shapes", imgsz=640))
    run = in_transaction(store, lambda s: begin_attempt(s, asked, LEASE))
    assert run is not None and run.params.imgsz == 640, "nothing known of the model yet"
    in_transaction(store, lambda s: record_run_size(s, asked, 384))  # the worker loaded it and found 384
    assert run_size(8192) is None and run_size(4096) == 4096, "past the jobs table's bounds: the size asked"
    assert in_transaction(store, lambda s: s.get_one(Job, asked).imgsz) == 384

    report = LoadedModel("shapes", str(BUNDLED_MODEL), None, "detect", {}, 32, 320, fixed_imgsz=320)
    in_transaction(store, lambda s: record_loaded_model(s, report))
    later = create_queued_job(store, image_bytes(seed=2), params=JobParams(model="shapes", imgsz=640))
    run = in_transaction(store, lambda s: begin_attempt(s, later, LEASE))
    assert run is not None and run.params.imgsz == 320, "the registry knows it: the attempt runs at it"
    assert in_transaction(store, lambda s: s.get_one(Job, later).imgsz) == 320


def test_a_registration_reads_only_weights_under_the_allowed_folders(store: Storage, tmp_path: Path) -> None:
    settings = settings_of(store)
    models = store.blobs.root / "models"
    (models / "coco_openvino_model").mkdir(parents=True)
    (models / "coco_openvino_model" / "coco.xml").write_text("<net/>")
    (models / "plain").mkdir()
    (models / "yolo11n.pt").write_bytes(zipped())
    (models / "text.pt").write_text("not a zip")
    (models / "other.pt").write_bytes(zipped_without_pickle())
    (models / "text.onnx").write_text("not a protobuf model")
    (models / "fixed.onnx").write_bytes(ONNX)
    (models / "notes.txt").write_text("notes")
    outside = tmp_path / "outside.pt"
    outside.write_bytes(zipped())
    os.symlink(outside, models / "link.pt")

    def register(name: str, path: str | Path) -> ModelRecord | None:
        in_transaction(store, lambda s: register_model(s, store, settings, name, Weights(str(path)), None, None))
        return rows(store).get(name)

    refusals = {
        "relative.pt": WeightsNotAllowed,
        str(outside): WeightsNotAllowed,
        str(models / "link.pt"): WeightsNotAllowed,  # a symlink out of the volume
        "/etc/passwd": WeightsNotAllowed,
        "/nonexistent/x.pt": WeightsNotAllowed,  # the same answer as for a file that exists: no probing
        f"{models}/x\x00.pt": WeightsNotAllowed,  # no path has a NUL byte
        str(models / f"{'x' * 300}.pt"): WeightsNotAllowed,  # longer than a file's name may be
        str(models / "missing.pt"): WeightsNotFound,
        str(models / "text.pt"): NotWeights,
        str(models / "other.pt"): NotWeights,  # a zip, but not one torch.save wrote
        str(models / "text.onnx"): NotWeights,
        str(models / "notes.txt"): NotWeights,
        str(models / "plain"): NotWeights,
    }
    for path, refusal in refusals.items():
        with pytest.raises(refusal):
            register("refused", path)
    assert "refused" not in rows(store)
    assert register("coco", models / ".." / "models" / "yolo11n.pt").weights == str(models / "yolo11n.pt")
    assert register("coco-ov", models / "coco_openvino_model").source == "api"
    assert register("fixed", models / "fixed.onnx").weights == str(models / "fixed.onnx")
    assert register("bundled-copy", BUNDLED_MODEL).weights == str(BUNDLED_MODEL), "the bundled model's folder"
    for name, refusal in (("coco", ModelExists), ("default", InvalidModelName), ("a/b", InvalidModelName)):
        with pytest.raises(refusal):
            register(name, models / "yolo11n.pt")


def test_uploaded_weights_get_a_name_on_the_volume(store: Storage) -> None:
    settings = settings_of(store)
    tenant_id = in_transaction(store, lambda s: ensure_tenant(s, "operators").id)
    weights = zipped(b"coco weights")
    incoming = store.blobs.new_incoming()
    incoming.write(weights)

    def stored(session: Session) -> uuid.UUID:
        lock_digests(session, [incoming.sha256])
        file, _ = store_incoming(session, store.blobs, incoming, WeightsInfo())
        add_tenant_file(session, tenant_id, file.id, "yolo11n.pt")
        return file.id

    file_id = in_transaction(store, stored)

    def register(name: str, file: uuid.UUID, tenant: uuid.UUID | None) -> str:
        weights_of = Weights(file_id=file)
        return in_transaction(
            store, lambda s: register_model(s, store, settings, name, weights_of, tenant, None)
        ).weights

    with pytest.raises(UnknownFiles):
        register("coco", uuid.uuid4(), None)
    with pytest.raises(UnknownFiles):
        register("coco", file_id, in_transaction(store, lambda s: ensure_tenant(s, "other").id))
    path = Path(register("coco", file_id, tenant_id))
    assert path.parent == store.blobs.root / "models" and path.name.startswith("coco-") and path.suffix == ".pt"
    assert path.read_bytes() == weights and path.stat().st_nlink == 2, "a hard link to the stored blob"
    image = create_queued_job(store, image_bytes(seed=3), tenant_id=tenant_id)
    of_image = select(StoredFile.id, StoredFile.path).join(Upload, Upload.file_id == StoredFile.id)
    image_file, image_path = in_transaction(store, lambda s: s.execute(of_image.where(Upload.job_id == image)).one())
    with pytest.raises(NotWeights, match=r"img-0\.png was not uploaded as weights"):
        register("image", image_file, tenant_id)
    store.blobs.path_of(image_path).unlink()
    with pytest.raises(FileGone):
        register("image", image_file, tenant_id)


def test_only_models_an_admin_registered_are_retired_through_the_api(store: Storage) -> None:
    settings = settings_of(store, YOLO_MODELS="coco=/m/coco.pt")
    (store.blobs.root / "own.onnx").write_bytes(ONNX)
    registry = ModelRegistry(settings, store)
    in_transaction(
        store, lambda s: registry.register(s, "own", Weights(str(store.blobs.root / "own.onnx")), None, None)
    )
    for name, refusal in (("shapes", ConfiguredModel), ("default", ConfiguredModel), ("coco", ConfiguredModel)):
        with pytest.raises(refusal):
            in_transaction(store, lambda s, name=name: retire_model(s, settings, name, None))
    with pytest.raises(ModelNotFound):
        in_transaction(store, lambda s: retire_model(s, settings, "nope", None))
    first = in_transaction(store, lambda s: registry.retire(s, "own", None))
    again = in_transaction(store, lambda s: registry.retire(s, "own", None))
    assert first.retired_at is not None and again.retired_at == first.retired_at, "retiring again changes nothing"
    with pytest.raises(ModelExists, match="names are never reused"):
        in_transaction(
            store, lambda s: registry.register(s, "own", Weights(str(store.blobs.root / "own.onnx")), None, None)
        )
    with pytest.raises(ModelRetired):
        in_transaction(store, lambda s: registry.for_job(s, "own"))
    assert [m.name for m in in_transaction(store, registry.listing)] == ["shapes", "coco"], "the form lists active ones"


def test_the_job_service_names_the_registrys_model_and_refuses_a_retired_one(store: Storage) -> None:
    service = JobService(settings_of(store), store, None)  # type: ignore[arg-type]  (no job is sent)
    params = in_transaction(store, lambda s: service.sized(s, JobParams(model="default", imgsz=100)))
    assert params == JobParams(model="shapes", imgsz=100), "an alias: the job records the registry's name"
    assert in_transaction(store, lambda s: model_classes(s, "shapes")) == {}, "no worker reported it yet"
    (store.blobs.root / "own.pt").write_bytes(zipped())
    in_transaction(
        store, lambda s: service.models.register(s, "own", Weights(str(store.blobs.root / "own.pt")), None, None)
    )
    assert in_transaction(store, lambda s: service.sized(s, JobParams(model="own"))).model == "own"
    in_transaction(store, lambda s: service.models.retire(s, "own", None))
    with pytest.raises(ModelRetired):
        in_transaction(store, lambda s: service.sized(s, JobParams(model="own")))

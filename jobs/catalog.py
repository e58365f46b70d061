"""The model registry as jobs read it: which names a job may ask for, the weights each runs, what the workers
found in them, and the size a job runs at.

The registry is the ``models`` table, so a model added or retired at run time (:mod:`jobs.registry`) counts at
once for every API process and worker, none restarted. ``YOLO_MODELS`` seeds it whenever an API process or a
worker starts (:func:`seed_registry`, idempotent), so an existing deployment keeps its models. Workers record
what they find in each model they load (classes, stride, trained size, and the one size an export made at a fixed
size runs at), so the API lists classes and works out a job's size without loading weights (or importing torch).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from config import Settings
from config.paths import BUNDLED_MODEL
from config.settings import model_name
from inference.defaults import DEFAULT_INFERENCE_SIZE
from jobs.errors import JobRefused
from storage.blobs import file_sha256
from storage.tables import ModelRecord

log = logging.getLogger(__name__)

# Where a registered model came from: YOLO_MODELS (seeded at start-up) or an admin through the API.
SOURCE_SETTINGS, SOURCE_API = "settings", "api"
# A model's name: what jobs, URLs and the command line name it by.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
# The sizes a job may ask for and record (schema.sql's jobs.imgsz check).
IMGSZ_RANGE = (32, 4096)
# A row of the registry, not only an old worker's report of weights it loaded.
REGISTERED = ModelRecord.source.is_not(None)
# What a worker reports of the weights it loaded (the latest load wins).
REPORTED = ("weights_sha256", "task", "classes", "stride", "imgsz", "fixed_imgsz")


class UnknownModel(JobRefused):
    """A job asked for a model the registry does not hold."""

    def __init__(self, named: str, known: list[str]) -> None:
        super().__init__(f"Unknown model {named[:100]!r}; known models: {', '.join(known)}.")


class ModelRetired(JobRefused):
    """A job asked for a model an admin (or YOLO_MODELS, by leaving it out) retired: it takes no new job."""

    def __init__(self, name: str, retired_at: datetime, known: list[str]) -> None:
        when = retired_at.date().isoformat()
        super().__init__(
            f"Model {name!r} was retired on {when}: it takes no new job; known models: {', '.join(known)}."
        )


@dataclass(frozen=True)
class LoadedModel:
    """A model as a worker loaded it; ``fixed_imgsz``: the one size it runs at (an export made at a fixed size)."""

    name: str
    weights: str
    weights_sha256: str | None
    task: str
    classes: dict[str, str]
    stride: int | None = None
    imgsz: int | None = None
    fixed_imgsz: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    """A registered model, with what a worker reported of these very weights (``record``: None before any did)."""

    name: str
    weights: str
    bundled: bool
    record: ModelRecord | None
    source: str | None
    registered_at: datetime | None
    retired_at: datetime | None

    @classmethod
    def of(cls, row: ModelRecord) -> ModelInfo:
        reported = row if row.loaded_at is not None else None  # a report of other weights is cleared by the seed
        bundled = row.weights == str(BUNDLED_MODEL)
        return cls(row.name, row.weights, bundled, reported, row.source, row.registered_at, row.retired_at)

    @property
    def present(self) -> bool:
        return weights_present(self.weights)

    @property
    def fixed_imgsz(self) -> int | None:
        """The one size the model runs at, whatever a job asks (known once a worker loaded it)."""
        return self.record.fixed_imgsz if self.record is not None else None

    def size_for(self, requested: int | None) -> int | None:
        """The size a job asking for ``requested`` (None: the default) runs at: the model's fixed size if it has
        one, else rounded to its stride; as asked while no worker has reported the model."""
        if self.record is None:
            return requested
        return run_size(self.record.fixed_imgsz) or reported_size(requested, self.record.imgsz, self.record.stride)


def run_size(fixed: int | None) -> int | None:
    """The size every job of a model that runs at one ``fixed`` size (an export made so) runs at and records: that
    size, if a job can record it (:data:`IMGSZ_RANGE`); None for a model that runs at the size asked."""
    low, high = IMGSZ_RANGE
    return fixed if fixed is not None and low <= fixed <= high else None


def reported_size(requested: int | None, trained: int | None, stride: int | None) -> int | None:
    """:func:`inference_size` with what a worker reported of the model; as asked while its stride is unknown."""
    return inference_size(requested, trained, stride) if stride else requested


def inference_size(requested: int | None, trained: int | None, stride: int) -> int:
    """The size Ultralytics predicts at: the job's size, else the weights' own, else 640, rounded up to a
    multiple of the model's largest ``stride`` and at least one stride, as ``ultralytics.utils.checks.check_imgsz``
    does (reproduced here: the API never imports Ultralytics)."""
    size = requested or trained or DEFAULT_INFERENCE_SIZE
    return max(math.ceil(size / stride) * stride, stride)


def seed_registry(session: Session, settings: Settings) -> None:
    """Register ``YOLO_MODELS``' models (idempotent: run at every start-up).

    A name not yet registered is added; one whose weights changed gets them, and what a worker reported of the
    old ones no longer counts; one listed again after it was left out is active again. A name ``YOLO_MODELS``
    no longer lists is retired, as a removed model was refused before. A name an admin registered through the
    API is left alone, whatever ``YOLO_MODELS`` says of it.
    """
    for name, weights in settings.models.items():
        statement = insert(ModelRecord).values(
            name=name, weights=weights, source=SOURCE_SETTINGS, registered_at=func.now()
        )
        changed = ModelRecord.weights != statement.excluded.weights
        statement = statement.on_conflict_do_update(
            index_elements=[ModelRecord.name],
            set_={
                "source": SOURCE_SETTINGS,
                "weights": statement.excluded.weights,
                "registered_at": func.coalesce(ModelRecord.registered_at, func.now()),
                "retired_at": None,
                "retired_by": None,
                "loaded_at": case((changed, None), else_=ModelRecord.loaded_at),
            },
            where=or_(ModelRecord.source.is_(None), ModelRecord.source == SOURCE_SETTINGS)
            & or_(changed, ModelRecord.source.is_(None), ModelRecord.retired_at.is_not(None)),
        )
        if session.execute(statement.returning(ModelRecord.name)).first() is not None:
            log.info("model registered from YOLO_MODELS name=%s weights=%s", name, weights)
    retired = session.scalars(
        update(ModelRecord)
        .where(
            ModelRecord.source == SOURCE_SETTINGS,
            ModelRecord.name.not_in(list(settings.models)),
            ModelRecord.retired_at.is_(None),
        )
        .values(retired_at=func.now())
        .returning(ModelRecord.name)
    ).all()
    for name in retired:
        log.info("model retired: YOLO_MODELS no longer lists it name=%s", name)


def registered_models(session: Session, default_model: str) -> list[ModelInfo]:
    """Every registered model, retired ones included: the default first, then in the order they were registered."""
    rows = session.scalars(
        select(ModelRecord)
        .where(REGISTERED)
        .order_by((ModelRecord.name == default_model).desc(), ModelRecord.registered_at, ModelRecord.name)
    )
    return [ModelInfo.of(row) for row in rows]


def active_names(session: Session) -> list[str]:
    """The names a new job may ask for, in order."""
    statement = (
        select(ModelRecord.name)
        .where(REGISTERED, ModelRecord.retired_at.is_(None))
        .order_by(ModelRecord.registered_at, ModelRecord.name)
    )
    return list(session.scalars(statement))


def registered_model(session: Session, name: str) -> ModelRecord | None:
    """The registry's row of ``name`` (an alias stands for its model), retired or not; None if not registered (a
    name no model can have, such as one with a NUL byte, is looked up nowhere)."""
    name = model_name(name)
    if not NAME.fullmatch(name):
        return None
    row = session.get(ModelRecord, name)
    return row if row is not None and row.source is not None else None


def model_for_job(session: Session, name: str) -> ModelInfo:
    """The model a new job asking for ``name`` (a registry name or an alias) runs: :class:`UnknownModel` when the
    registry does not hold it, :class:`ModelRetired` when it was retired."""
    row = registered_model(session, name)
    if row is None:
        raise UnknownModel(name, active_names(session))
    if row.retired_at is not None:
        raise ModelRetired(row.name, row.retired_at, active_names(session))
    return ModelInfo.of(row)


def weights_present(weights: str) -> bool:
    """Whether weights can be loaded: a weights or export file exists, an OpenVINO export folder holds its
    model, or a model YAML names an architecture (built from its name)."""
    path = Path(weights)
    if path.is_dir():
        return any(path.glob("*.xml"))
    return path.is_file() or weights.endswith((".yaml", ".yml"))


def weights_sha256(weights: str) -> str | None:
    """The digest of a weights file, or None for a model built from its YAML name."""
    return file_sha256(weights) if Path(weights).is_file() else None


def record_loaded_model(session: Session, model: LoadedModel) -> None:
    """Record what a worker found in the weights it loaded (the latest load wins); a registered model's row takes
    it only while it still names those weights."""
    values = {
        "name": model.name,
        "weights": model.weights,
        "weights_sha256": model.weights_sha256,
        "task": model.task,
        "classes": model.classes,
        "stride": model.stride,
        "imgsz": model.imgsz,
        "fixed_imgsz": model.fixed_imgsz,
        "loaded_at": func.now(),
    }
    statement = insert(ModelRecord).values(**values)
    updates = {k: statement.excluded[k] for k in ("weights", *REPORTED, "loaded_at")}
    same_weights = or_(ModelRecord.source.is_(None), ModelRecord.weights == statement.excluded.weights)
    session.execute(
        statement.on_conflict_do_update(index_elements=[ModelRecord.name], set_=updates, where=same_weights)
    )


def model_classes(session: Session, name: str) -> dict[int, str]:
    """The classes of model ``name`` by index, as a worker last reported them (empty before any did)."""
    record = session.get(ModelRecord, name)
    classes = record.classes if record is not None else None
    return {int(index): label for index, label in (classes or {}).items()}

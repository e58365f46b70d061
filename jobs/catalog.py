"""The models jobs can ask for: the configured weights, and what each detects as the workers report it.

Workers record every model they load here (classes, stride, trained size); the API
lists models from here and works out the size a job runs at, so it never has to load
weights (or import torch) itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from config import Settings
from inference.defaults import DEFAULT_INFERENCE_SIZE
from storage.blobs import file_sha256
from storage.tables import ModelRecord

# What working out a job's size reads of its model (not its classes), built once.
_SIZE_OF = select(ModelRecord.weights, ModelRecord.stride, ModelRecord.imgsz).where(
    ModelRecord.name == bindparam("name")
)


@dataclass(frozen=True)
class LoadedModel:
    """A model as a worker loaded it."""

    name: str
    weights: str
    weights_sha256: str | None
    task: str
    classes: dict[str, str]
    stride: int | None = None
    imgsz: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    """A configured model, with what a worker reported of these very weights (None before any did)."""

    name: str
    weights: str
    bundled: bool
    record: ModelRecord | None

    @property
    def present(self) -> bool:
        return weights_present(self.weights)

    def size_for(self, requested: int | None) -> int | None:
        """The size a job asking for ``requested`` (None: the default) runs at; None while the stride is unknown."""
        if self.record is None:
            return requested
        return reported_size(requested, self.record.imgsz, self.record.stride)


def reported_size(requested: int | None, trained: int | None, stride: int | None) -> int | None:
    """:func:`inference_size` with what a worker reported of the model; as asked while its stride is unknown."""
    return inference_size(requested, trained, stride) if stride else requested


def inference_size(requested: int | None, trained: int | None, stride: int) -> int:
    """The size Ultralytics predicts at: the job's size, else the weights' own, else 640, rounded up to a
    multiple of the model's largest ``stride`` and at least one stride, as ``ultralytics.utils.checks.check_imgsz``
    does (reproduced here: the API never imports Ultralytics)."""
    size = requested or trained or DEFAULT_INFERENCE_SIZE
    return max(math.ceil(size / stride) * stride, stride)


def configured_models(session: Session, settings: Settings) -> list[ModelInfo]:
    """Every configured model in registry order, with its worker's report when it is of the same weights."""
    reported = reported_models(session)
    infos = []
    for name, weights in settings.models.items():
        record = reported.get(name)
        same = record if record is not None and record.weights == weights else None
        infos.append(ModelInfo(name, weights, settings.runs_bundled_weights(name), same))
    return infos


def job_size(session: Session, settings: Settings, name: str, requested: int | None) -> int | None:
    """The size a job of configured model ``name`` asking for ``requested`` runs at (as :meth:`ModelInfo.size_for`
    says), reading only that model's weights, stride and trained size."""
    row = session.execute(_SIZE_OF, {"name": name}).first()
    if row is None or row.weights != settings.models[name]:
        return requested
    return reported_size(requested, row.imgsz, row.stride)


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
    """Upsert the model's row (the latest load wins)."""
    values = {
        "name": model.name,
        "weights": model.weights,
        "weights_sha256": model.weights_sha256,
        "task": model.task,
        "classes": model.classes,
        "stride": model.stride,
        "imgsz": model.imgsz,
    }
    statement = insert(ModelRecord).values(**values)
    updates = {k: statement.excluded[k] for k in ("weights", "weights_sha256", "task", "classes", "stride", "imgsz")}
    session.execute(
        statement.on_conflict_do_update(index_elements=[ModelRecord.name], set_={**updates, "loaded_at": func.now()})
    )


def reported_models(session: Session) -> dict[str, ModelRecord]:
    """Every model a worker recorded, by name."""
    return {record.name: record for record in session.scalars(select(ModelRecord))}


def model_classes(session: Session, name: str) -> dict[int, str]:
    """The classes of model ``name`` by index, as a worker last reported them (empty before any did)."""
    record = session.get(ModelRecord, name)
    return {int(index): label for index, label in record.classes.items()} if record else {}

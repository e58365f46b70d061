"""The models jobs can ask for: the configured weights, and what each detects as the workers report it.

Workers record every model they load here; the API lists models with their
classes from here, so it never has to load weights (or import torch) itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from storage.blobs import file_sha256
from storage.tables import ModelRecord


@dataclass(frozen=True)
class LoadedModel:
    """A model as a worker loaded it."""

    name: str
    weights: str
    weights_sha256: str | None
    task: str
    classes: dict[str, str]


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
    }
    statement = insert(ModelRecord).values(**values)
    updates = {k: statement.excluded[k] for k in ("weights", "weights_sha256", "task", "classes")}
    session.execute(
        statement.on_conflict_do_update(index_elements=[ModelRecord.name], set_={**updates, "loaded_at": func.now()})
    )


def reported_models(session: Session) -> dict[str, ModelRecord]:
    """Every model a worker recorded, by name."""
    return {record.name: record for record in session.scalars(select(ModelRecord))}

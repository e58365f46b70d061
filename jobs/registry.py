"""Admins register and retire models at run time; no API process or worker restarts.

A model is a name and its weights: a path on the shared volume, or a file the admin sent by a resumable upload
(then linked under ``models/`` on the volume, named for the model: :mod:`storage.weights`). Workers load it on a
job's first use (``tasks.model_pool``).

The API reads only what a rule allows: a path must lie, symlinks followed, under ``STORAGE_ROOT`` (the volume
every worker mounts) or the folder the bundled model ships in, and this is checked before anything of the path
is looked at, so an admin key cannot probe the server's other files. The weights must then be there and of a
form a worker loads (``.pt``, ``.onnx``, ``.engine`` or an OpenVINO export folder); a ``.pt`` or ``.onnx`` must
hold what its name says, checked as an upload of weights is (:func:`storage.weights.identify_weights`). Nothing
here loads them (the API never imports torch): a file that passes and still does not load fails its jobs with
``model_unavailable``.

Names are never reused: a retired model keeps its row, so the jobs that ran on it keep their classes, and a name
registered through the API always means the same weights (a ``YOLO_MODELS`` name takes a changed path at the next
start-up, which restarts the workers that load it). A model ``YOLO_MODELS`` registers is retired by leaving it out
of ``YOLO_MODELS`` (the next start-up retires it); the API refuses to retire it, as the next start-up would bring
it back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from config import Settings
from config.paths import BUNDLED_MODEL
from config.settings import MODEL_ALIASES
from files.errors import FileGone
from files.ownership import held_files
from jobs.catalog import (
    NAME,
    SOURCE_API,
    SOURCE_SETTINGS,
    ModelInfo,
    model_for_job,
    registered_model,
    registered_models,
    seed_registry,
)
from jobs.errors import JobRefused, UnknownFiles
from storage import Storage
from storage.images import UnsupportedMedia
from storage.tables import ModelRecord
from storage.weights import UPLOADED_SUFFIXES, identify_weights, place_weights

log = logging.getLogger(__name__)

# The weights files a worker loads (an OpenVINO export is a folder named *_openvino_model).
FILE_SUFFIXES = (*UPLOADED_SUFFIXES, ".engine")
OPENVINO_FOLDER = "_openvino_model"
DIGEST_IN_NAME = 12


class InvalidModelName(JobRefused):
    """A name a model cannot have (an alias is taken: it names its model)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"A model's name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, and not "
            f"{', '.join(repr(alias) for alias in MODEL_ALIASES)}; got {name[:100]!r}."
        )


class ModelExists(JobRefused):
    """A name registered before, even if since retired."""

    def __init__(self, name: str, retired: bool) -> None:
        reason = "was registered and retired: names are never reused" if retired else "is registered already"
        super().__init__(f"A model named {name!r} {reason}; choose another name.")


class ModelNotFound(JobRefused):
    """No registered model of that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"No model named {name[:100]!r}.")


class WeightsNotAllowed(JobRefused):
    """A path outside the folders the API may read weights from."""

    def __init__(self, path: str, roots: list[Path]) -> None:
        allowed = " or ".join(str(root) for root in roots)
        super().__init__(f"Weights must be an absolute path under {allowed}; {path[:300]!r} is not.")


class WeightsNotFound(JobRefused):
    """An allowed path where nothing is."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"No weights at {path}.")


class NotWeights(JobRefused):
    """A file or folder of a form no worker loads."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what}: weights are a .pt (PyTorch's zip archive), .onnx or .engine file, or an OpenVINO export "
            f"folder (*{OPENVINO_FOLDER}/ holding its .xml)."
        )


class ConfiguredModel(JobRefused):
    """A model YOLO_MODELS registers (or the default model) cannot be retired through the API."""

    def __init__(self, name: str, default: bool) -> None:
        reason = "is the default model (YOLO_DEFAULT_MODEL)" if default else "is registered by YOLO_MODELS"
        super().__init__(f"Model {name!r} {reason}: leave it out there and restart to retire it.")


@dataclass(frozen=True)
class Weights:
    """Where a new model's weights are: a path on the server, or a stored file the admin sent."""

    path: str | None = None
    file_id: uuid.UUID | None = None


def allowed_roots(settings: Settings) -> list[Path]:
    """The folders weights may be read from: the shared volume and the bundled model's folder, resolved."""
    return [settings.storage_root.resolve(), BUNDLED_MODEL.parent.resolve()]


def checked_path(raw: str, roots: list[Path]) -> Path:
    """``raw`` resolved (symlinks followed) when it lies under one of ``roots`` and holds weights; refused else.

    Where it points is decided before anything at that path is looked at (no probing the server's files)."""
    path = Path(raw)
    if not path.is_absolute():
        raise WeightsNotAllowed(raw, roots)
    try:
        resolved = path.resolve()
        inside = any(resolved.is_relative_to(root) for root in roots)
        found = inside and resolved.exists()
    except (ValueError, OSError):  # a NUL byte, a name longer than the filesystem allows
        raise WeightsNotAllowed(raw, roots) from None
    if not inside:
        raise WeightsNotAllowed(raw, roots)
    if not found:
        raise WeightsNotFound(resolved)
    check_form(resolved, resolved.name)
    return resolved


def check_form(path: Path, name: str) -> None:
    """:class:`NotWeights` unless ``path`` (named ``name``) is of a form a worker loads."""
    if path.is_dir():
        if not (name.endswith(OPENVINO_FOLDER) and any(path.glob("*.xml"))):
            raise NotWeights(f"{name} is a folder but no OpenVINO export")
        return
    suffix = Path(name).suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise NotWeights(f"{name} is not weights")
    if path.stat().st_size == 0:
        raise NotWeights(f"{name} is empty")
    if suffix in UPLOADED_SUFFIXES:
        try:
            with open(path, "rb") as stream:
                identify_weights(stream, name)
        except UnsupportedMedia as refused:
            raise NotWeights(f"{name}: {refused}") from None


def register_model(
    session: Session,
    storage: Storage,
    settings: Settings,
    name: str,
    weights: Weights,
    tenant_id: uuid.UUID | None,
    key_id: uuid.UUID | None,
) -> ModelInfo:
    """Add model ``name`` running ``weights`` (a path, or a stored file of ``tenant_id``: any tenant's when None),
    registered by the key ``key_id``; the caller commits.

    Refuses a bad name (:class:`InvalidModelName`), a name in use (:class:`ModelExists`), a path outside the
    allowed folders (:class:`WeightsNotAllowed`), missing weights (:class:`WeightsNotFound`), a file of another
    form (:class:`NotWeights`), a file the tenant does not hold (``UnknownFiles``) or whose bytes are gone
    (``FileGone``).
    """
    if not NAME.fullmatch(name) or name in MODEL_ALIASES:
        raise InvalidModelName(name)
    existing = session.get(ModelRecord, name)
    if existing is not None and existing.source is not None:
        raise ModelExists(name, existing.retired_at is not None)
    if weights.file_id is None:
        path = checked_path(weights.path or "", allowed_roots(settings))
    else:
        path = _placed(session, storage, name, weights.file_id, tenant_id)
    statement = insert(ModelRecord).values(
        name=name, weights=str(path), source=SOURCE_API, registered_at=func.now(), registered_by=key_id
    )
    # A row of that name without a source is only an old worker's report (of other weights): replaced.
    replace_report = statement.on_conflict_do_update(
        index_elements=[ModelRecord.name],
        set_={
            "weights": statement.excluded.weights,
            "source": SOURCE_API,
            "registered_at": func.now(),
            "registered_by": key_id,
            "loaded_at": None,
        },
        where=ModelRecord.source.is_(None),
    )
    if session.execute(replace_report.returning(ModelRecord.name)).first() is None:
        raise ModelExists(name, retired=False)  # registered meanwhile by another request
    log.info("model registered name=%s weights=%s key=%s", name, path, key_id)
    return ModelInfo.of(session.get_one(ModelRecord, name, populate_existing=True))


def _placed(session: Session, storage: Storage, name: str, file_id: uuid.UUID, tenant_id: uuid.UUID | None) -> Path:
    """The stored file ``file_id`` linked under ``models/`` as ``<name>-<digest><suffix>``, once it passed."""
    held = held_files(session, tenant_id, [file_id]).get(file_id)
    if held is None:
        raise UnknownFiles([str(file_id)])
    if held.file.deleted_at is not None or not storage.blobs.exists(held.file.path):
        raise FileGone(file_id)
    if held.file.width is not None or held.file.media is not None:  # stored as an image or a video
        raise NotWeights(f"{held.filename} was not uploaded as weights (Upload-Metadata purpose weights)")
    suffix = Path(held.filename).suffix.lower()
    check_form(storage.blobs.path_of(held.file.path), held.filename)
    return place_weights(storage.blobs, held.file.path, f"{name}-{held.file.sha256[:DIGEST_IN_NAME]}{suffix}")


def found_model(session: Session, name: str) -> ModelRecord:
    """The registered model ``name`` (an alias stands for its model), retired or not; :class:`ModelNotFound`."""
    row = registered_model(session, name)
    if row is None:
        raise ModelNotFound(name)
    return row


def retire_model(session: Session, settings: Settings, name: str, key_id: uuid.UUID | None) -> ModelInfo:
    """Retire model ``name`` (an alias stands for its model): it takes no new job, and jobs accepted before still
    run. Retiring a retired model changes nothing. :class:`ModelNotFound`, or :class:`ConfiguredModel` for the
    default model and those ``YOLO_MODELS`` registers; the caller commits."""
    row = found_model(session, name)
    if row.source == SOURCE_SETTINGS or row.name == settings.default_model:
        raise ConfiguredModel(row.name, row.name == settings.default_model)
    if row.retired_at is None:
        row.retired_at, row.retired_by = func.now(), key_id
        session.flush()
        session.refresh(row)
        log.info("model retired name=%s key=%s", row.name, key_id)
    return ModelInfo.of(row)


class ModelRegistry:
    """The registry as one API process serves it: seeded from ``YOLO_MODELS`` on first use (once per process;
    a worker seeds it when it starts), then read and changed in the caller's session."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self._seeded = False

    def ready(self) -> None:
        """Seed the registry from ``YOLO_MODELS`` unless this process did (:func:`jobs.catalog.seed_registry`)."""
        if not self._seeded:
            with self.storage.database.transaction() as session:
                seed_registry(session, self.settings)
            self._seeded = True

    def listing(self, session: Session, retired: bool = False) -> list[ModelInfo]:
        """The registered models, the default first; retired ones too when ``retired``."""
        self.ready()
        models = registered_models(session, self.settings.default_model)
        return models if retired else [model for model in models if model.retired_at is None]

    def for_job(self, session: Session, name: str) -> ModelInfo:
        """The model a new job asking for ``name`` runs (:func:`jobs.catalog.model_for_job`)."""
        self.ready()
        return model_for_job(session, name)

    def find(self, session: Session, name: str) -> ModelInfo:
        """The registered model ``name`` (an alias stands for its model), retired or not; :class:`ModelNotFound`."""
        self.ready()
        return ModelInfo.of(found_model(session, name))

    def register(
        self,
        session: Session,
        name: str,
        weights: Weights,
        tenant_id: uuid.UUID | None,
        key_id: uuid.UUID | None,
    ) -> ModelInfo:
        """:func:`register_model`, committed."""
        self.ready()
        model = register_model(session, self.storage, self.settings, name, weights, tenant_id, key_id)
        session.commit()
        return model

    def retire(self, session: Session, name: str, key_id: uuid.UUID | None) -> ModelInfo:
        """:func:`retire_model`, committed."""
        self.ready()
        model = retire_model(session, self.settings, name, key_id)
        session.commit()
        return model

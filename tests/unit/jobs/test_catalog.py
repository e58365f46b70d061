"""The model catalog: what the workers report loading, the latest load winning, and which weights exist."""

from __future__ import annotations

import hashlib
from pathlib import Path

from config import Settings
from jobs.catalog import (
    LoadedModel,
    configured_models,
    job_size,
    record_loaded_model,
    reported_models,
    weights_present,
    weights_sha256,
)
from storage import Storage


def test_the_latest_load_of_a_model_wins(store: Storage) -> None:
    first = LoadedModel("default", "/m/a.pt", "a" * 64, "detect", {"0": "circle"})
    second = LoadedModel("default", "/m/b.pt", None, "detect", {"0": "circle", "1": "square"})
    other = LoadedModel("coco", "yolo11n.yaml", None, "detect", {"0": "person"})
    with store.database.transaction() as session:
        record_loaded_model(session, first)
    with store.database.transaction() as session:
        record_loaded_model(session, second)
        record_loaded_model(session, other)
    with store.database.transaction() as session:
        models = reported_models(session)
    assert set(models) == {"default", "coco"}
    record = models["default"]
    assert (record.weights, record.weights_sha256, record.classes) == ("/m/b.pt", None, second.classes)


def test_weights_present_and_their_digest(tmp_path: Path) -> None:
    weights = tmp_path / "model.pt"
    assert not weights_present(str(weights)) and weights_sha256(str(weights)) is None
    weights.write_bytes(b"weights")
    assert weights_present(str(weights))
    assert weights_sha256(str(weights)) == hashlib.sha256(b"weights").hexdigest()
    assert weights_present("yolo11n.yaml"), "a model YAML is built from its name"


def test_an_openvino_export_folder_is_present_once_it_holds_its_model(tmp_path: Path) -> None:
    export = tmp_path / "model_openvino_model"
    export.mkdir()
    assert not weights_present(str(export)), "an empty folder is not an export"
    (export / "model.xml").write_text("<net/>")
    assert weights_present(str(export))
    assert not weights_present(str(tmp_path / "missing.onnx"))


def test_a_jobs_size_is_what_the_catalog_says_of_its_model(store: Storage) -> None:
    settings = Settings.from_env({"YOLO_MODELS": "coco=/m/coco.pt,plain=/m/plain.pt,unseen=/m/unseen.pt"})
    names = list(settings.models)
    reported, stale, strideless = names[:3]
    with store.database.transaction() as session:
        record_loaded_model(session, LoadedModel(reported, settings.models[reported], None, "detect", {}, 32, 640))
        record_loaded_model(session, LoadedModel(stale, "/other/weights.pt", None, "detect", {}, 32, 640))
        record_loaded_model(session, LoadedModel(strideless, settings.models[strideless], None, "detect", {}))
    with store.database.transaction() as session:
        catalog = {info.name: info for info in configured_models(session, settings)}
        for name in names:
            for requested in (None, 100, 640):
                expected = catalog[name].size_for(requested)
                assert job_size(session, settings, name, requested) == expected, (name, requested)
        assert job_size(session, settings, reported, 100) == 128, "rounded up to the reported stride"
        assert job_size(session, settings, reported, None) == 640, "the trained size when none is asked for"
        assert job_size(session, settings, stale, 100) == 100, "as asked: the report is of other weights"
        assert job_size(session, settings, strideless, None) is None, "as asked while the stride is unknown"

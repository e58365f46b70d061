"""A worker's model pool: each model loaded on its first use and once, at most WORKER_MAX_MODELS of them (the
least recently used let go), named by the registry (an alias too), each load reported with its fixed size; no
GPU here, so the detectors are stand-ins (the loader is the one part played)."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from inference.backends import Choice
from jobs.catalog import LoadedModel
from tasks.model_pool import ModelPool, ModelUnavailable


@dataclass
class StandIn:
    """A loaded model as a detector shows itself; ``fixed_imgsz`` set for an export made at one size."""

    path: str
    fixed_imgsz: int | None = None
    backend: str = "stand-in"
    precision: str = "fp32"
    task: str = "detect"
    names: dict[int, str] = field(default_factory=lambda: {0: "square"})
    stride: int = 32
    imgsz: int = 320
    weights_sha256: str | None = None


@dataclass
class Registry:
    """The registry's answers (name to weights), and the loads the pool reported."""

    weights: dict[str, str]
    reported: list[LoadedModel] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def weights_of(self, name: str) -> str | None:
        self.lookups.append(name)
        return self.weights.get(name)

    def loaded(self, model: LoadedModel) -> None:
        self.reported.append(model)


class Loader:
    """Loads stand-ins, counting each load; a path ending in ``broken.pt`` fails as a corrupt file does."""

    def __init__(self, fixed: dict[str, int] | None = None) -> None:
        self.fixed = fixed or {}
        self.loads: list[str] = []

    def __call__(self, choice: Choice, device: str, threads: int) -> StandIn:
        self.loads.append(Path(choice.path).stem)
        if choice.path.endswith("broken.pt"):
            raise RuntimeError("PytorchStreamReader failed reading zip archive")
        return StandIn(choice.path, self.fixed.get(Path(choice.path).stem))


@pytest.fixture()
def weights(tmp_path: Path) -> dict[str, str]:
    """Weights files a, b, c and shapes (plain .pt: no OpenVINO export beside them, so they run as they are)."""
    paths = {}
    for name in ("a", "b", "c", "shapes", "broken"):
        path = tmp_path / f"{name}.pt"
        path.write_bytes(f"weights of {name}".encode())
        paths[name] = str(path)
    return paths


def pool_of(registry: Registry, loader: Loader, max_models: int = 2) -> ModelPool:
    return ModelPool(registry, "cpu", 1, max_models, loader=loader)


def test_a_model_loads_on_first_use_once_and_reports_what_it_found(weights: dict[str, str]) -> None:
    registry, loader = Registry(weights), Loader(fixed={"b": 384})
    pool = pool_of(registry, loader)
    first = pool.get("a")
    assert pool.get("a") is first and loader.loads == ["a"], "loaded once per process"
    assert registry.lookups == ["a"], "a loaded model is served without asking the registry again"
    (report,) = registry.reported
    assert report == LoadedModel(
        "a", weights["a"], hashlib.sha256(b"weights of a").hexdigest(), "detect", {"0": "square"}, 32, 320, None
    )
    assert first.weights_sha256 == report.weights_sha256, "the key of the results it infers"
    assert pool.fixed_size("b") == 384 and registry.reported[-1].fixed_imgsz == 384
    assert pool.fixed_size("a") is None, "a model of dynamic input runs at the size asked"


def test_past_the_bound_the_least_recently_used_model_is_let_go(
    weights: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    loader = Loader()
    pool = pool_of(Registry(weights), loader, max_models=2)
    caplog.set_level(logging.INFO, logger="tasks.model_pool")
    pool.get("a")
    pool.get("b")
    pool.get("a")  # a is now the most recently used
    pool.get("c")
    assert pool.names == ["a", "c"], "b was the least recently used"
    assert "model let go name=b (WORKER_MAX_MODELS=2)" in caplog.text
    pool.get("b")
    assert pool.names == ["c", "b"] and loader.loads == ["a", "b", "c", "b"], "b loads again; a goes"


def test_an_alias_names_its_model(weights: dict[str, str]) -> None:
    registry, loader = Registry(weights), Loader()
    pool = pool_of(registry, loader)
    assert pool.get("default") is pool.get("shapes") and loader.loads == ["shapes"]
    assert registry.lookups == ["shapes"]


def test_an_unregistered_or_unloadable_model_is_unavailable_and_tried_again(
    weights: dict[str, str], tmp_path: Path
) -> None:
    late = tmp_path / "late.pt"
    registry, loader = Registry({**weights, "late": str(late)}), Loader()
    pool = pool_of(registry, loader)
    with pytest.raises(ModelUnavailable, match="model 'nope' is not registered"):
        pool.get("nope")
    with pytest.raises(ModelUnavailable, match=re.escape(f"weights for model 'late' not found at {late}")):
        pool.get("late")
    with pytest.raises(ModelUnavailable, match=r"'broken' at .*broken\.pt cannot be loaded: PytorchStreamReader"):
        pool.get("broken")
    assert pool.fixed_size("nope") is None, "its job fails in the pipeline, with model_unavailable"
    late.write_bytes(b"weights put in place later")
    assert pool.get("late").path == str(late), "the next job of it tries again: no restart"
    assert pool.names == ["late"] and registry.reported[-1].name == "late"


def test_an_export_whose_metadata_cannot_be_read_makes_its_model_unavailable_not_the_worker(
    weights: dict[str, str], tmp_path: Path
) -> None:
    """Choosing between the weights and their export reads the export's metadata.yaml: a broken one fails that
    model's load, as corrupt weights do, and the pool serves the others."""
    export = tmp_path / "a_openvino_model"
    export.mkdir()
    (export / "model.xml").write_text("<net/>")
    (export / "metadata.yaml").write_text("")  # as a copy cut short leaves it: no mapping at all
    pool = pool_of(Registry(weights), Loader())
    with pytest.raises(ModelUnavailable, match=r"weights for model 'a' at .*a\.pt cannot be loaded"):
        pool.get("a")
    pool.preload(["a", "b"])
    assert pool.names == ["b"]


def test_preload_loads_at_most_the_bound_and_says_why_one_cannot(
    weights: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry, loader = Registry({**weights, "gone": str(tmp_path / "gone.pt")}), Loader()
    pool = pool_of(registry, loader, max_models=2)
    caplog.set_level(logging.WARNING, logger="tasks.model_pool")
    pool.preload(["gone", "a", "b"])
    assert pool.names == ["a"] and loader.loads == ["a"], "the first two names: gone could not load"
    assert "model unavailable name=gone reason=weights for model 'gone' not found" in caplog.text

"""The YOLO models one worker process serves: each loaded on its first job, after fork, on the runtime it runs
fastest on, and at most ``WORKER_MAX_MODELS`` of them at once.

The names come from the model registry (``jobs.catalog``): a model an admin registers at run time is served from
its first job on, with no restart. A loaded model's weights do not change under its name while the process runs
(names are never reused, and a ``YOLO_MODELS`` path changes at a start-up), so a loaded model is used until it
is let go: past the bound, the least recently used one goes. Each load is reported to the registry (classes,
stride, trained size, the weights' digest, and the one size an export made at a fixed size runs at). Weights that
are missing or do not load make :meth:`ModelPool.get` raise :class:`ModelUnavailable` for that model only; the next
job of it tries again, so weights put in place later are picked up.

``WORKER_DEVICE=auto`` pins prefork child *k* to GPU ``k % count`` when CUDA is present, else the CPU; a worker
installed without PyTorch (the ``worker-cpu`` extra) is on the CPU, and never imports torch. Each model runs on
the backend ``inference.backends.choose`` picks (on a CPU, a ``.pt`` model's OpenVINO export when present and made
from those weights, else PyTorch, and the log says why) with ``threads`` inference threads. Without PyTorch, a model
that needs it is unavailable, and the one line that says so (at start-up for ``YOLO_MODELS``' models, and in its
jobs' ``model_unavailable`` error) names what to install or export.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Protocol

from billiard.process import current_process

from config.settings import model_name
from inference.backends import PYTORCH, Choice, Detector, NeedsPyTorch, choose, installed, load
from jobs.catalog import LoadedModel, weights_present, weights_sha256
from tasks import metrics

log = logging.getLogger(__name__)

# Loads the weights a choice names on a device, with so many threads (inference.backends.load).
Loader = Callable[[Choice, str, int], Detector]


class ModelUnavailable(RuntimeError):
    """The requested model is not registered, or its weights cannot be loaded."""


class Registry(Protocol):
    """What the pool needs of the model registry."""

    def weights_of(self, name: str) -> str | None:
        """The weights of registered model ``name`` (retired or not: jobs accepted before still run); None if
        the registry holds no such model."""
        ...

    def loaded(self, model: LoadedModel) -> None:
        """Record what a worker found in a model it loaded (best effort)."""
        ...


def resolve_device(setting: str) -> str:
    """Turn ``auto|cpu|cuda:N`` into the torch device this process uses (the CPU where torch is not installed)."""
    if setting != "auto":
        return setting
    if not installed(PYTORCH):
        return "cpu"
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return "cpu"
    index = getattr(current_process(), "index", None) or 0
    return f"cuda:{index % count}"


class ModelPool:
    """The models loaded into this process, most recently used last, at most ``max_models``."""

    def __init__(
        self, registry: Registry, device_setting: str, threads: int, max_models: int, loader: Loader = load
    ) -> None:
        self.registry = registry
        self.device_setting = device_setting
        self.threads = threads
        self.max_models = max_models
        self.loader = loader
        self._models: OrderedDict[str, Detector] = OrderedDict()

    @cached_property
    def device(self) -> str:
        return resolve_device(self.device_setting)

    @property
    def names(self) -> list[str]:
        """The models loaded now, least recently used first."""
        return list(self._models)

    def preload(self, names: Iterable[str]) -> None:
        """Load the first ``max_models`` of ``names`` now (a worker's start: ``YOLO_MODELS``' models); log why one
        cannot be."""
        for name in list(names)[: self.max_models]:
            try:
                self.get(name)
            except ModelUnavailable as exc:
                log.warning("model unavailable name=%s reason=%s", name, exc)

    def get(self, name: str) -> Detector:
        """The model ``name`` (an alias stands for its model), loaded on first use; :class:`ModelUnavailable` if the
        registry holds no such model or its weights cannot be loaded."""
        name = model_name(name)
        detector = self._models.get(name)
        if detector is not None:
            self._models.move_to_end(name)
            return detector
        weights = self.registry.weights_of(name)
        if weights is None:
            raise ModelUnavailable(f"model {name!r} is not registered")
        while len(self._models) >= self.max_models:  # room first: never more than the bound in memory
            self._let_go(next(iter(self._models)))
        detector = self._models[name] = self._load(name, weights)
        return detector

    def fixed_size(self, name: str) -> int | None:
        """The one size model ``name`` runs at whatever a job asks (an export made at a fixed size); None when it
        runs at the size asked, or cannot be loaded (its job fails with ``model_unavailable``)."""
        try:
            return self.get(name).fixed_imgsz
        except ModelUnavailable:
            return None

    def _let_go(self, name: str) -> None:
        """Unload the model ``name``: its memory (on the GPU too) is freed once no round holds it any more."""
        del self._models[name]
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        log.info("model let go name=%s (WORKER_MAX_MODELS=%d)", name, self.max_models)

    def _load(self, name: str, weights: str) -> Detector:
        if not weights_present(weights):
            raise ModelUnavailable(f"weights for model {name!r} not found at {weights}")
        started = time.perf_counter()
        try:  # choosing reads the weights and an export's metadata: a bad file fails this model alone, not the worker
            choice = choose(weights, self.device)
            detector = self.loader(choice, self.device, self.threads)
        except NeedsPyTorch as exc:
            raise ModelUnavailable(f"model {name!r} cannot run on this worker: {exc}") from None
        except Exception as exc:
            raise ModelUnavailable(f"weights for model {name!r} at {weights} cannot be loaded: {exc}") from exc
        seconds = time.perf_counter() - started
        if choice.fallback_reason:
            log.warning("model name=%s runs on PyTorch from %s: %s", name, weights, choice.fallback_reason)
        metrics.model_loaded(name, seconds)
        classes = {str(index): label for index, label in detector.names.items()}
        loaded = LoadedModel(
            name,
            weights,
            weights_sha256(weights),
            detector.task,
            classes,
            detector.stride,
            detector.imgsz,
            detector.fixed_imgsz,
        )
        detector.weights_sha256 = loaded.weights_sha256  # the key of the results it infers (jobs.reuse)
        self.registry.loaded(loaded)
        log.info(
            "model loaded name=%s weights=%s backend=%s from=%s device=%s threads=%d fixed_imgsz=%s seconds=%.3f "
            "pid=%d",
            name,
            weights,
            detector.backend,
            choice.path,
            self.device,
            self.threads,
            detector.fixed_imgsz,
            seconds,
            os.getpid(),
            extra={
                "model": name,
                "weights": weights,
                "backend": detector.backend,
                "device": self.device,
                "threads": self.threads,
                "seconds": round(seconds, 3),
            },
        )
        return detector

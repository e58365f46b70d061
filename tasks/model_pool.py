"""The YOLO models one worker process serves, each loaded once, after fork, on the runtime it runs fastest on.

``WORKER_DEVICE=auto`` pins prefork child *k* to GPU ``k % count`` when CUDA is
present, else the CPU. Each model runs on the backend ``inference.backends.choose``
picks (on a CPU, a ``.pt`` model's OpenVINO export when present, else PyTorch,
and the start-up log says why) with ``threads`` inference threads. Weights that
are missing make :meth:`ModelPool.get` raise :class:`ModelUnavailable` for that
model only.
"""

from __future__ import annotations

import logging
import os
import time
from functools import cached_property

from billiard.process import current_process

from inference.backends import Detector, choose, load
from jobs.catalog import LoadedModel, weights_present, weights_sha256
from tasks import metrics

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The requested model is not configured here, or its weights cannot be loaded."""


def resolve_device(setting: str) -> str:
    """Turn ``auto|cpu|cuda:N`` into the torch device this process uses."""
    if setting != "auto":
        return setting
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return "cpu"
    index = getattr(current_process(), "index", None) or 0
    return f"cuda:{index % count}"


class ModelPool:
    """Named models loaded into this process."""

    def __init__(self, registry: dict[str, str], device_setting: str, threads: int) -> None:
        self.registry = dict(registry)
        self.device_setting = device_setting
        self.threads = threads
        self._models: dict[str, Detector] = {}
        self._errors: dict[str, str] = {}
        self.loaded: list[LoadedModel] = []

    @cached_property
    def device(self) -> str:
        return resolve_device(self.device_setting)

    def load_all(self) -> None:
        """Load every configured model whose weights are present; remember why the others are not."""
        for name in self.registry:
            try:
                self._load(name)
            except ModelUnavailable as exc:
                self._errors[name] = str(exc)
                log.warning("model unavailable name=%s reason=%s", name, exc)

    def _load(self, name: str) -> Detector:
        weights = self.registry[name]
        if not weights_present(weights):
            raise ModelUnavailable(f"weights for model {name!r} not found at {weights}")
        choice = choose(weights, self.device)
        if choice.fallback_reason:
            log.warning("model name=%s runs on PyTorch from %s: %s", name, weights, choice.fallback_reason)
        started = time.perf_counter()
        try:
            detector = load(choice, self.device, self.threads)
        except Exception as exc:
            raise ModelUnavailable(f"weights for model {name!r} at {choice.path} cannot be loaded: {exc}") from exc
        seconds = time.perf_counter() - started
        self._models[name] = detector
        metrics.model_loaded(name, seconds)
        classes = {str(index): label for index, label in detector.names.items()}
        loaded = LoadedModel(
            name, weights, weights_sha256(weights), detector.task, classes, detector.stride, detector.imgsz
        )
        self.loaded.append(loaded)
        detector.weights_sha256 = loaded.weights_sha256  # the key of the results it infers (jobs.reuse)
        log.info(
            "model loaded name=%s weights=%s backend=%s from=%s device=%s threads=%d seconds=%.3f pid=%d",
            name,
            weights,
            detector.backend,
            choice.path,
            self.device,
            self.threads,
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

    def get(self, name: str) -> Detector:
        """The loaded model ``name``; raise :class:`ModelUnavailable` if it is unknown or failed to load."""
        if name in self._models:
            return self._models[name]
        if name not in self.registry:
            raise ModelUnavailable(f"model {name!r} is not configured on this worker")
        if name in self._errors:
            raise ModelUnavailable(self._errors[name])
        return self._load(name)

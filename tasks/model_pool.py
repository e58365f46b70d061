"""The YOLO models one worker process serves, each loaded once, after fork.

``WORKER_DEVICE=auto`` pins prefork child *k* to GPU ``k % count`` when CUDA is
present, else the CPU. Weights that are missing make :meth:`ModelPool.get`
raise :class:`ModelUnavailable` for that model only.
"""

from __future__ import annotations

import logging
import os
import time
from functools import cached_property
from typing import TYPE_CHECKING

from billiard.process import current_process

from jobs.catalog import LoadedModel, weights_present, weights_sha256
from tasks import metrics

if TYPE_CHECKING:
    from ultralytics import YOLO

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


def model_geometry(model: YOLO) -> tuple[int, int | None]:
    """The model's largest stride (what inference sizes are rounded to) and the size its weights were trained at."""
    strides = getattr(model.model, "stride", None)
    stride = int(strides.max()) if strides is not None else 32  # Ultralytics' own fallback
    trained = model.overrides.get("imgsz")
    if isinstance(trained, list | tuple):
        trained = max(trained)
    return stride, int(trained) if trained else None


class ModelPool:
    """Named models loaded into this process."""

    def __init__(self, registry: dict[str, str], device_setting: str) -> None:
        self.registry = dict(registry)
        self.device_setting = device_setting
        self._models: dict[str, YOLO] = {}
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

    def _load(self, name: str) -> YOLO:
        from ultralytics import YOLO

        weights = self.registry[name]
        if not weights_present(weights):
            raise ModelUnavailable(f"weights for model {name!r} not found at {weights}")
        started = time.perf_counter()
        try:
            model = YOLO(weights)
            model.to(self.device)
        except Exception as exc:
            raise ModelUnavailable(f"weights for model {name!r} at {weights} cannot be loaded: {exc}") from exc
        seconds = time.perf_counter() - started
        self._models[name] = model
        metrics.model_loaded(name, seconds)
        classes = {str(index): str(label) for index, label in model.names.items()}
        stride, imgsz = model_geometry(model)
        self.loaded.append(LoadedModel(name, weights, weights_sha256(weights), model.task, classes, stride, imgsz))
        log.info(
            "model loaded name=%s weights=%s device=%s seconds=%.3f pid=%d",
            name,
            weights,
            self.device,
            seconds,
            os.getpid(),
            extra={"model": name, "weights": weights, "device": self.device, "seconds": round(seconds, 3)},
        )
        return model

    def get(self, name: str) -> YOLO:
        """The loaded model ``name``; raise :class:`ModelUnavailable` if it is unknown or failed to load."""
        if name in self._models:
            return self._models[name]
        if name not in self.registry:
            raise ModelUnavailable(f"model {name!r} is not configured on this worker")
        if name in self._errors:
            raise ModelUnavailable(self._errors[name])
        return self._load(name)

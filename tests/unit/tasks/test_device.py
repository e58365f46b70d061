"""WORKER_DEVICE resolution. No GPU exists here, so CUDA's answers are faked (the only mock in the suite)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tasks import model_pool


@pytest.mark.parametrize(
    ("index", "gpus", "expected"),
    [(0, 2, "cuda:0"), (1, 2, "cuda:1"), (2, 2, "cuda:0"), (3, 3, "cuda:0"), (5, 3, "cuda:2")],
)
def test_auto_pins_child_k_to_gpu_k_mod_count(
    monkeypatch: pytest.MonkeyPatch, index: int, gpus: int, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(model_pool, "current_process", lambda: SimpleNamespace(index=index))
    assert model_pool.resolve_device("auto") == expected


def test_auto_without_cuda_is_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert model_pool.resolve_device("auto") == "cpu"


@pytest.mark.parametrize("setting", ["cpu", "cuda:3"])
def test_explicit_device_is_used_as_is(setting: str) -> None:
    assert model_pool.resolve_device(setting) == setting

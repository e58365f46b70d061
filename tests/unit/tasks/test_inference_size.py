"""The inference size a job runs at: the domain's rule (which the API uses, without Ultralytics) against
Ultralytics' own ``check_imgsz``, and the stride and trained size a worker reports of the bundled weights."""

from __future__ import annotations

import pytest
from ultralytics.utils.checks import check_imgsz

from config.paths import BUNDLED_MODEL
from inference.backends import UltralyticsDetector, choose, load
from jobs.catalog import inference_size
from jobs.lifecycle import JobParams
from tasks.decoding import inference_size_on


@pytest.mark.parametrize("stride", [8, 16, 32, 64])
def test_sizes_are_rounded_as_ultralytics_rounds_them(stride: int) -> None:
    for requested in [*range(1, 130, 3), stride - 1, stride, stride + 1, 319, 320, 321, 641, 1000, 4095, 4096]:
        expected = check_imgsz(requested, stride=stride, min_dim=1)  # what the predictor does (floor 0)
        assert inference_size(requested, None, stride) == expected, requested


def test_no_size_asked_is_the_trained_size_else_640() -> None:
    assert inference_size(None, 320, 32) == 320
    assert inference_size(None, 300, 32) == 320, "a trained size off the stride is rounded too"
    assert inference_size(None, None, 32) == 640
    assert inference_size(100, 320, 32) == 128


def test_the_worker_reports_and_predicts_at_the_same_size() -> None:
    pytorch = UltralyticsDetector(str(BUNDLED_MODEL), "cpu", 1)
    assert pytorch.stride == int(pytorch.model.model.stride.max()) and pytorch.imgsz == pytorch.model.overrides["imgsz"]
    preferred = load(choose(str(BUNDLED_MODEL), "cpu"), "cpu", 1)  # the OpenVINO export once make built it
    assert (preferred.stride, preferred.imgsz) == (pytorch.stride, pytorch.imgsz), "every backend reports alike"
    for requested in (None, 100, 320, 1000):
        expected = inference_size(requested, pytorch.imgsz, pytorch.stride)
        for detector in (pytorch, preferred):
            assert inference_size_on(detector, JobParams(model="shapes", imgsz=requested)) == expected

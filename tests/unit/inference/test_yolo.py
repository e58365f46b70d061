"""Ultralytics' post-processing redone in numpy: NMS keeps what torchvision keeps, boxes map back to the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from inference.yolo import greedy_nms, letterbox, to_original


@pytest.mark.parametrize("seed", range(5))
def test_greedy_nms_keeps_what_torchvision_keeps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 300, (400, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(5, 80, (400, 2)).astype(np.float32)], axis=1)
    scores = rng.uniform(0, 1, 400).astype(np.float32)
    for iou in (0.3, 0.7):
        expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
        np.testing.assert_array_equal(greedy_nms(boxes, scores, iou), expected)


@pytest.mark.parametrize(
    ("shape", "rect"), [((480, 640), (256, 320)), ((640, 480), (320, 256)), ((250, 333), (256, 320))]
)
def test_a_box_on_the_letterboxed_input_maps_back_to_the_original(
    shape: tuple[int, int], rect: tuple[int, int]
) -> None:
    height, width = shape
    image = np.zeros((height, width, 3), np.uint8)
    image[height // 4 : height // 2, width // 4 : width // 2] = 255
    boxed = letterbox([image, np.zeros((10, 10, 3), np.uint8)], 320, 32)
    assert boxed.batch.shape == (2, 3, 320, 320), "mixed shapes are padded square"
    bright = np.argwhere(boxed.batch[0, 0] > 0.5)
    (top, left), (bottom, right) = bright.min(0), bright.max(0) + 1
    box = to_original(np.array([[left, top, right, bottom]], np.float64), (320, 320), shape)[0]
    np.testing.assert_allclose(box, [width // 4, height // 4, width // 2, height // 2], atol=2.5)
    assert letterbox([image, image], 320, 32).batch.shape[2:] == rect, "one shape: padded to the stride only"

"""Issue 26's quality bar for huge images, through the whole system: small objects found in tiles.

A model sees an image resized to its input size: in a 12,000 × 12,000 picture a 30-pixel shape shrinks to about
a pixel and is lost. A generated scene of such shapes (``harness.scenes``, every box known) is sent with tus and
run twice on the real API and worker, once with ``tiles=auto`` (cut into tile groups, each a part, merged by a
finish part) and once with ``tiles=off`` (today's reduced decode of the whole picture): tiles must find at least
90% of the shapes, with no shape found twice across a tile border; the recall without tiles is reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import supervision as sv

from harness.processes import ServiceProcess
from harness.scenes import LabelledBox, recall, write_large_scene
from tests.functional.test_video_quality import FinishedJob, load_average, run_job, upload_with_tus
from tests.helpers import TestKey

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SCENE_SIZE = (12000, 12000)
MIN_TILED_RECALL = 0.9
# TILES_PER_PART's default: the suite's services run with it.
DEFAULT_TILES_PER_PART = 64
# Two boxes of one class overlapping more than this are one shape found twice (the service merges at 0.5).
DUPLICATE_IOU = 0.5


def found_boxes(finished: FinishedJob) -> list[LabelledBox]:
    """The job's one result as ``harness.scenes`` boxes: class index and corners."""
    (result,) = finished.job["results"]
    assert result["error"] is None, result
    return [(d["class"], *(d["box"][k] for k in ("x1", "y1", "x2", "y2"))) for d in result["detections"]]


def overlapping_pairs(boxes: Sequence[LabelledBox], min_iou: float) -> list[tuple[LabelledBox, LabelledBox]]:
    """Pairs of boxes of the same class that overlap by more than ``min_iou`` (supervision's IoU, the one the
    service's merge uses). The scene's shapes never touch, so any such pair is one shape found in pieces."""
    pairs = []
    for cls in {box[0] for box in boxes}:
        same = [box for box in boxes if box[0] == cls]
        corners = np.array([box[1:] for box in same], dtype=float)
        overlaps = np.triu(sv.box_iou_batch(corners, corners), k=1)
        pairs += [(same[i], same[j]) for i, j in zip(*np.nonzero(overlaps > min_iou), strict=True)]
    return pairs


def parts_of(job: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [part for part in job["parts"] if part["kind"] == kind]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[LabelledBox]]:
    """The 12,000 × 12,000 JPEG of 800 30-pixel shapes and their boxes (about 3 s to draw)."""
    path = tmp_path_factory.mktemp("tiles") / "scene.jpg"
    return path, write_large_scene(path, *SCENE_SIZE, shape_px=30)


def test_tiles_find_the_small_shapes_that_the_reduced_decode_loses(
    api: requests.Session,
    api_url: str,
    api_key: TestKey,
    worker: ServiceProcess,
    scene: tuple[Path, list[LabelledBox]],
) -> None:
    path, truth = scene
    file_id = upload_with_tus(api_url, api_key, path)
    # One after the other, so that each time is the job's own.
    tiled = run_job(api, api_url, api_key, {"file_ids": [file_id], "tiles": "auto"})
    whole = run_job(api, api_url, api_key, {"file_ids": [file_id], "tiles": "off"})
    tiled_found, whole_found = found_boxes(tiled), found_boxes(whole)
    tiled_recall, whole_recall = recall(tiled_found, truth), recall(whole_found, truth)
    print(
        f"\ntiles: recall {tiled_recall:.4f} ({len(tiled_found)} boxes of {len(truth)}) in {tiled.seconds:.1f} s; "
        f"off: recall {whole_recall:.4f} ({len(whole_found)} boxes) in {whole.seconds:.1f} s; "
        f"{len(parts_of(tiled.job, 'tiles'))} tile parts; {len(overlapping_pairs(tiled_found, 0.0))} pairs of "
        f"boxes touching; load average {load_average()}"
    )

    assert tiled.job["status"] == whole.job["status"] == "succeeded", (tiled.job, whole.job)
    assert tiled_recall >= MIN_TILED_RECALL
    assert overlapping_pairs(tiled_found, DUPLICATE_IOU) == []
    # The tiled image runs as several tile groups, merged by one finish part; the whole one runs as a plain image.
    tile_parts, finish_parts = parts_of(tiled.job, "tiles"), parts_of(tiled.job, "finish")
    assert len(tile_parts) > 1 and len(finish_parts) == 1
    assert {part["status"] for part in tiled.job["parts"]} == {"done"}
    # Each part analysed all its tiles: TILES_PER_PART of them but the last, of a square grid over the square scene.
    # (The tiles' side is the model's input size, which the job's JSON does not say, so the count is not fixed.)
    in_order = sorted(tile_parts, key=lambda part: part["number"])
    done = [part["done"] for part in in_order]
    assert done[:-1] == [DEFAULT_TILES_PER_PART] * (len(done) - 1) and 0 < done[-1] <= DEFAULT_TILES_PER_PART
    assert math.isqrt(sum(done)) ** 2 == sum(done)
    assert [part["total"] for part in in_order] == done
    assert whole.job["parts"] == []
    # Neither took the other's result: what a job found depends on its tiles.
    assert not tiled.job["results"][0]["cached"] and not whole.job["results"][0]["cached"]

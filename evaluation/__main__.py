"""Score weights on the independent set and on shape-free photos, straight through Ultralytics.

``python -m evaluation [WEIGHTS] --seed 1 --count 300`` prints objects found, false
boxes per object and boxes on Ultralytics' bus and zidane photos at conf 0.25 (a job's
default; ``--conf`` for another) and the model's own input size, as the worker runs it.
It is the quick measure for the model card; ``tests/functional/test_model_quality.py``
is the gate, through the whole system.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from config.paths import BUNDLED_MODEL
from config.ultralytics import configure_ultralytics_under
from evaluation.matching import MatchStats, match
from evaluation.scenes import render
from inference.defaults import DEFAULT_CONF

PHOTOS = ("bus.jpg", "zidane.jpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("weights", nargs="?", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--imgsz", type=int, help="input size (default: the model's own)")
    parser.add_argument("--conf", type=float, default=DEFAULT_CONF, help="confidence threshold (default: a job's)")
    args = parser.parse_args()
    configure_ultralytics_under()

    import cv2
    import numpy as np
    import ultralytics
    from ultralytics import YOLO

    model = YOLO(str(args.weights))
    options = {"conf": args.conf, "device": "cpu", "verbose": False, **({"imgsz": args.imgsz} if args.imgsz else {})}
    stats = MatchStats()
    started = time.perf_counter()
    for index in range(args.count):
        data, _width, _height, truths = render(args.seed, index)
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        (prediction,) = model.predict(pixels, **options)
        stats.add(match(truths, prediction.summary()))
    per_image_ms = (time.perf_counter() - started) / args.count * 1000
    print(f"independent set seed {args.seed}, {args.count} images, conf {args.conf}: {stats}")
    print(f"{per_image_ms:.0f} ms per image")
    assets = Path(ultralytics.__file__).parent / "assets"
    for name in PHOTOS:
        (prediction,) = model.predict(str(assets / name), **options)
        boxes = [f"{d['name']} {d['confidence']:.2f}" for d in prediction.summary()]
        print(f"{name}: {len(boxes)} boxes {boxes}")


if __name__ == "__main__":
    main()

"""Train the bundled shapes model on CPU, stage by stage, and ship the weights.

Run with ``make model``; the model card (``models/shapes-yolov8n.md``) gives every
stage's seeds, times and results. Stage ``base`` trains a nano YOLO from scratch on clean
shapes (``training/shapes.py``); stage ``scenes`` fine-tunes those weights on shapes
among clutter, photographs and shape-free images (``training/scenes.py``), so that
lines, text and edges stop coming back as triangles; stage ``evaluation-cases`` goes on with
what the independent evaluation still caught it on: border-cut shapes labelled when
mostly visible, bands across shapes, small shapes, zigzags and bold text, resolution
loss; stage ``hard`` draws a large pool of both generators' images, trains on those the
``evaluation-cases`` weights still put a false box on at conf 0.25 (``training/mining.py``) with as
many others, at input 384 (which the shipped weights keep as their size), and keeps the
epoch with the fewest errors on its validation split; ``hard-again`` is a second round of
it, mining a new pool with the ``hard`` weights. The rounds after it keep the recipe and
change the pool: ``hollow`` and ``hollow-again`` add the classes' outlines and sprays of specks
to the clutter, ``photos`` puts most of the pool on photographs, half of them bare.
Each stage's data has its own seeds; ``--from`` starts the first stage named
from weights already trained by the stages before it (the shipped ones were made that way). The weights go to
``models/shapes-yolov8n.pt``; the held-out metrics of the last stage are printed
for the model card.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from config.paths import BUNDLED_MODEL, VAR_DIR
from config.ultralytics import configure_ultralytics_under
from evaluation.matching import MatchStats
from training import mining
from training.scenes import render_evaluation_cases, render_hollow, render_mixed, render_photos, render_scene
from training.shapes import Renderer, render_sample, write_data_yaml, write_dataset, write_split


@dataclass(frozen=True)
class Stage:
    """One training run: its data (renderer, seeds, sizes) and the few settings that differ."""

    name: str
    render: Renderer
    seeds: tuple[int, int, int]  # train, val, held-out test
    counts: tuple[int, int, int]
    epochs: int
    optimizer: str
    lr0: float
    warmup_epochs: float
    close_mosaic: int
    # Train on the images of a pool (counts[0] of them) where the starting weights put a false box, with as
    # many others, and keep the epoch with the fewest errors on the val split (training/mining.py).
    hard_examples: bool = False
    imgsz: int = 320  # the input size it trains at, which the weights keep as the size a job runs at
    cls: float = 0.5  # the weight of the classification loss, background included (Ultralytics' default 0.5)


def hard_round(name: str, render: Renderer, seeds: tuple[int, int, int]) -> Stage:
    """A round on hard examples: a pool of 2,400 mined with the weights before it, 7 epochs at input 384."""
    return Stage(name, render, seeds, (2400, 300, 200), 7, "AdamW", 0.0004, 0.5, 2, True, 384, 1.0)


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("base", render_sample, (0, 1, 2), (800, 100, 200), 45, "auto", 0.01, 3.0, 10),
        Stage("scenes", render_scene, (10, 11, 12), (900, 100, 200), 6, "AdamW", 0.001, 1.0, 2),
        Stage("evaluation-cases", render_evaluation_cases, (20, 21, 22), (900, 100, 200), 10, "AdamW", 0.0007, 0.5, 2),
        hard_round("hard", render_mixed, (30, 31, 32)),
        hard_round("hard-again", render_mixed, (40, 41, 42)),  # a new pool, mined with the ``hard`` weights
        # Pools whose clutter also holds the classes' outlines and sprays of specks, mined with the weights before.
        hard_round("hollow", render_hollow, (60, 61, 62)),
        hard_round("hollow-again", render_hollow, (70, 71, 72)),
        # A pool mostly on photographs, half of them bare, a portrait among them, mined with the weights before.
        hard_round("photos", render_photos, (90, 91, 92)),
    )
}


def validate(weights: Path, data_yaml: Path, imgsz: int) -> dict[str, float]:
    """Ultralytics' own validation of ``weights`` on the ``test`` split of ``data_yaml``."""
    from ultralytics import YOLO

    metrics = YOLO(str(weights)).val(
        data=str(data_yaml), split="test", imgsz=imgsz, batch=16, device="cpu", plots=False, verbose=False, workers=0
    )
    return {
        "mAP50": float(metrics.box.map50),
        "mAP50-95": float(metrics.box.map),
        "precision": float(metrics.box.mp),
        "recall": float(metrics.box.mr),
    }


def input_size(stage: Stage, args: argparse.Namespace) -> int:
    """The size the stage trains, mines and chooses its epoch at: its own, unless ``--imgsz`` overrides it."""
    return args.imgsz or stage.imgsz


def write_stage_data(stage: Stage, var: Path, weights: Path, imgsz: int) -> Path:
    """Generate the stage's train, val and test splits under ``var``; return their data.yaml.

    A hard-examples stage draws a pool instead of its train split, and makes the train split of
    the pool's images on which ``weights`` put a false box and as many of the others, in pool order.
    """
    root = var / "datasets" / f"shapes-{stage.name}"
    splits = dict(zip(("train", "val", "test"), zip(stage.seeds, stage.counts, strict=True), strict=True))
    if not stage.hard_examples:
        return write_dataset(root, splits, stage.render)
    shutil.rmtree(root, ignore_errors=True)  # the train split depends on the weights it was mined with
    for split, (seed, count) in {"pool": splits.pop("train"), **splits}.items():
        write_split(root, split, seed, count, stage.render)
    pool = mining.errors(weights, mining.split_images(root / "images" / "pool"), imgsz)
    hard = [found.image for found in pool if found.stats.false_boxes]
    others = [found.image for found in pool if not found.stats.false_boxes][: len(hard)]
    print(f"stage {stage.name}: {len(hard)} of {len(pool)} pool images with a false box under {weights}")
    mining.link_split(hard + others, root, "train")
    return write_data_yaml(root, ["train", "val", "test"])


def fewest_errors(weights_dir: Path, data_yaml: Path, imgsz: int) -> Path:
    """The epoch checkpoint with the fewest false boxes plus misses on the val split (the later one on a tie)."""
    val = data_yaml.parent / "images" / "val"
    scores = {}
    for checkpoint in sorted(weights_dir.glob("epoch*.pt"), key=lambda path: int(path.stem.removeprefix("epoch"))):
        total = MatchStats()
        for found in mining.errors(checkpoint, mining.split_images(val), imgsz):
            total.add(found.stats)
        scores[checkpoint] = total.false_boxes + total.misses
        print(f"{checkpoint.name} on {val}: {total}")  # false boxes plus misses is its score
    return min(reversed(scores), key=scores.__getitem__)


def train_stage(stage: Stage, start: str, data_yaml: Path, args: argparse.Namespace) -> Path:
    """Train ``start`` (a model yaml or weights) on the stage's data; return its best weights."""
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import strip_optimizer

    model = YOLO(start)
    model.train(
        data=str(data_yaml),
        epochs=args.epochs or stage.epochs,
        imgsz=input_size(stage, args),
        batch=args.batch,
        device="cpu",
        workers=2,
        seed=stage.seeds[0],
        deterministic=True,
        pretrained=start.endswith(".pt"),
        optimizer=stage.optimizer,
        lr0=stage.lr0,
        warmup_epochs=stage.warmup_epochs,
        close_mosaic=stage.close_mosaic,
        cls=stage.cls,
        save_period=1 if stage.hard_examples else -1,
        amp=False,
        plots=False,
        cache="ram",
        project=str(args.var / "training"),
        name=stage.name,
        exist_ok=True,
        patience=0,
    )
    if not stage.hard_examples:
        return Path(model.trainer.best)
    chosen = fewest_errors(Path(model.trainer.wdir), data_yaml, input_size(stage, args))
    shipped = chosen.with_name("chosen.pt")
    shutil.copyfile(chosen, shipped)
    strip_optimizer(shipped)  # as Ultralytics strips best.pt: the weights alone
    print(f"stage {stage.name}: {chosen.name} has the fewest errors")
    return shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stages", nargs="+", choices=tuple(STAGES), default=list(STAGES))
    parser.add_argument("--from", dest="start", default="yolov8n.yaml", help="model yaml or weights to start from")
    parser.add_argument("--epochs", type=int, help="override every stage's epochs (pilot runs)")
    parser.add_argument("--imgsz", type=int, help="override every stage's input size (pilot runs)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--var", type=Path, default=VAR_DIR)
    args = parser.parse_args()
    args.var = args.var.resolve()  # Ultralytics would put a relative project folder under runs/
    configure_ultralytics_under(args.var)

    weights, data_yaml = Path(args.start), Path()
    for name in args.stages:
        started = time.monotonic()
        data_yaml = write_stage_data(STAGES[name], args.var, weights, input_size(STAGES[name], args))
        weights = train_stage(STAGES[name], str(weights), data_yaml, args)
        print(f"stage {name}: {(time.monotonic() - started) / 60:.1f} minutes, best weights {weights}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, args.out)
    metrics = validate(args.out, data_yaml, input_size(STAGES[args.stages[-1]], args))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB), held-out {data_yaml.parent.name}: {metrics}")


if __name__ == "__main__":
    main()

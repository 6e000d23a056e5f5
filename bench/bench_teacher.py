"""How honest and how good each 2D teacher is: leaks, confidence, 2D mIoU, masks.

For every teacher (the simulated presets, and with --trained the network `partseg
train-teacher` makes with its default settings, trained per category on the first
--train-shapes shapes; all teachers are then scored on the shapes after those) and every
category, over the boxes of the scored shapes (partseg_cli/teacher_metrics.py):

- R^2 purity: cross-validated R^2 of predicting each box's ground-truth purity (share of
  the labelled pixels inside it that carry its label) from its feature vector with ridge
  regression (5 folds split by shape, features standardised on the training folds, the
  best of five ridge strengths). A
  simulated instrument that does not leak sits near 0; glip-like-leaky shows what a leak
  looks like. A trained teacher's features may predict purity: it is a real network that
  knows where it is unsure, not a leak.
- AUROC: of the box confidence for right vs wrong boxes (right: IoU >= 0.5 with a
  ground-truth component of its own part, `evaluate.match_boxes`). 0.5 is uninformative,
  1 an oracle; GLIP-like is 0.6-0.85.
- precision / recall of the boxes against the ground-truth part components.
- 2D mIoU: confidence-weighted (PartDistill supp. Eq. A-D), boxes minus background.
- with --masks: mask purity (share of a mask's labelled pixels in its majority part) and
  2D mIoU of GrabCut masks (`sam-refine --model grabcut`) beside the ground-truth oracle
  (`--model sam-oracle`), for the same boxes.

Data: --data dev (the procedural dev shapes of bench/dev_shapes.py: presets are chosen
here) or --data labeleddb (the shared LabeledDB meshes: test data, report only).

    python bench/bench_teacher.py --data dev --shapes 6 --resolution 400
    python bench/bench_teacher.py --data labeleddb --shapes 10 --resolution 400 --masks
    python bench/bench_teacher.py --data labeleddb --shapes 12 --trained   # + the trained one
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from partseg_cli import render, shapes, simulated, train_teacher  # noqa: E402
from partseg_cli import teacher_metrics as metrics  # noqa: E402
from partseg_cli.records import Boxes, Masks, Shape  # noqa: E402
from partseg_cli.trained_teacher import TrainedTeacher  # noqa: E402

LABELEDDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "labeleddb"
LABELEDDB_CATEGORIES = ["Airplane", "Chair", "Cup", "Table"]


@dataclass
class Item:
    """One rendered labelled shape."""

    shape: Shape
    gt: np.ndarray  # (V, H, W) int32 ground-truth part per pixel
    foreground: np.ndarray  # (V, H, W) bool
    rgb: np.ndarray  # (V, H, W, 3) uint8


def load_items(data: str, category: str, count: int, resolution: int, offset: int = 0
               ) -> list[Item]:
    """Shapes offset..offset+count of a category, rendered in the 10 reference views."""
    cameras = render.reference_cameras(10, resolution)
    items = []
    if data == "dev":
        from dev_shapes import make_shape

        for index in range(offset, offset + count):
            shape = make_shape(category, index, 100)
            views = render.render_points(shape.points, shape.colors, cameras)
            items.append(Item(shape, render.label_images(views, shape.point_labels),
                              views.pixel_point >= 0, views.rgb))
        return items
    offs = sorted((LABELEDDB / category).glob("*.off"),
                  key=lambda f: int(f.stem) if f.stem.isdigit() else 0)[offset:offset + count]
    sources, _ = shapes.discover(LABELEDDB / category)
    by_path = {Path(s.path): s for s in sources}
    for off in offs:
        shape = shapes.load_shape(by_path[off], n_points=10000)
        views = render.render_shape(shape, cameras)
        items.append(Item(shape, render.label_images(views, shape.point_labels),
                          views.pixel_point >= 0, views.rgb))
    return items


def simulated_boxes(item: Item, preset: str, seed: int) -> Boxes:
    n_parts = len(item.shape.part_names)
    return simulated.simulate_boxes(item.gt, n_parts, item.shape.part_names, preset, seed,
                                    images=item.rgb, foreground=item.foreground,
                                    category=item.shape.category)


def train(items: list[Item], overrides: list[str]) -> TrainedTeacher:
    """The trained teacher of `partseg train-teacher` (its default settings, or these
    overrides) fitted on the items' renders, as the stage does it (train_teacher.fit)."""
    from bench_trained_teacher import parse_overrides

    config = replace(train_teacher.TrainTeacherConfig(device="cpu"),
                     **parse_overrides(overrides))
    pairs = [train_teacher.training_pairs(i.rgb, i.gt, i.foreground, config) for i in items]
    images = torch.cat([image for image, _ in pairs])
    targets = torch.cat([target for _, target in pairs])
    part_names = list(items[0].shape.part_names)
    net, _ = train_teacher.fit(images, targets, len(part_names), config)
    return TrainedTeacher(net, part_names, config.input_size, torch.device("cpu"), "bench",
                          "", set(), config.crop)


def mask_purity(gt: np.ndarray, view: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(B,) share of each mask's labelled pixels in its majority part (NaN when none)."""
    out = np.full(len(masks), np.nan)
    for b in range(len(masks)):
        labels = gt[view[b]][masks[b]]
        labels = labels[labels >= 0]
        if labels.size:
            out[b] = np.bincount(labels).max() / labels.size
    return out


def score(items: list[Item], boxes: list[Boxes], refiners: dict[str, object]
          ) -> dict[str, float]:
    """Pooled box diagnostics of one teacher on one category's scored shapes."""
    verdicts, mious = [], []
    mask_rows: dict[str, list[list[float]]] = {name: [[], []] for name in refiners}
    for item, b in zip(items, boxes, strict=True):
        n_parts = len(item.shape.part_names)
        verdicts.append(metrics.judge_boxes(item.gt, b.view, b.xyxy, b.labels, b.confidence,
                                            n_parts))
        regions = metrics.box_regions(b.xyxy, b.view, item.foreground)
        mious.append(metrics.teacher_miou_2d(item.gt, regions, b.view, b.labels,
                                             b.confidence, n_parts))
        for name, refine in refiners.items():
            masks: Masks = refine(item, b)
            kept = masks.masks & item.foreground[b.view]
            mask_rows[name][0].append(np.nanmean(mask_purity(item.gt, b.view, kept)))
            mask_rows[name][1].append(metrics.teacher_miou_2d(
                item.gt, kept, b.view, b.labels, b.confidence, n_parts))
    pooled = metrics.pooled_box_scores(verdicts)
    out = {
        "R2 purity": metrics.purity_r2([i.gt for i in items], boxes),
        "AUROC": pooled["auroc"],
        "precision": pooled["precision"],
        "recall": pooled["recall"],
        "2D mIoU": float(np.nanmean(mious)),
        "boxes/view": float(np.mean([len(b) / i.gt.shape[0] for i, b in zip(items, boxes,
                                                                            strict=True)])),
    }
    for name, (pur, miou) in mask_rows.items():
        out[f"{name} purity"] = float(np.nanmean(pur))
        out[f"{name} 2D"] = float(np.nanmean(miou))
    return out


def mask_refiners() -> dict[str, object]:
    from partseg_cli.sam_refine import GrabCutRefiner

    grabcut = GrabCutRefiner()

    def oracle(item: Item, boxes: Boxes) -> Masks:
        return simulated.simulate_masks(item.gt, boxes, seed=0)

    def refine_grabcut(item: Item, boxes: Boxes) -> Masks:
        return grabcut.refine(item.rgb, boxes)

    return {"grabcut": refine_grabcut, "oracle": oracle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["dev", "labeleddb"], default="dev")
    parser.add_argument("--shapes", type=int, default=6, help="scored shapes per category")
    parser.add_argument("--resolution", type=int, default=400, help="image side, pixels")
    parser.add_argument("--seeds", type=int, default=1, help="teacher seeds per shape")
    parser.add_argument("--presets", default=",".join(simulated.PRESETS))
    parser.add_argument("--categories", nargs="*", default=None)
    parser.add_argument("--masks", action="store_true",
                        help="also GrabCut and oracle mask purity (slower)")
    parser.add_argument("--trained", action="store_true",
                        help="also the trained teacher (train-teacher's defaults), trained "
                        "per category on the first --train-shapes shapes; every teacher is "
                        "then scored on the shapes after those")
    parser.add_argument("--train-shapes", type=int, default=8)
    parser.add_argument("--set", nargs="*", default=[],
                        help="TrainTeacherConfig overrides for --trained, e.g. epochs=20")
    args = parser.parse_args()
    if args.data == "labeleddb" and not LABELEDDB.is_dir():
        sys.exit(f"{LABELEDDB} not found")
    from dev_shapes import MAKERS

    categories = args.categories or (list(MAKERS) if args.data == "dev"
                                     else LABELEDDB_CATEGORIES)
    teachers = args.presets.split(",") + (["trained"] if args.trained else [])
    offset = args.train_shapes if args.trained else 0
    refiners = mask_refiners() if args.masks else {}
    print(f"data {args.data}, {args.shapes} shapes/category, 10 reference views at "
          f"{args.resolution} px, {args.seeds} seed(s)")
    start = time.time()
    table: dict[str, dict[str, dict[str, float]]] = {t: {} for t in teachers}
    for category in categories:
        items = load_items(args.data, category, args.shapes, args.resolution, offset)
        for teacher in teachers:
            rows = []
            if teacher == "trained":  # deterministic: one "seed"
                net = train(load_items(args.data, category, args.train_shapes,
                                       args.resolution), args.set)
                rows.append(score(items, [net.detect(i.rgb, i.shape.part_names)
                                          for i in items], refiners))
            for seed in range(args.seeds if teacher != "trained" else 0):
                boxes = [simulated_boxes(item, teacher, seed * 1000 + i)
                         for i, item in enumerate(items)]
                rows.append(score(items, boxes, refiners))
            table[teacher][category] = {k: float(np.mean([r[k] for r in rows]))
                                        for k in rows[0]}
        print(f"  {category} done ({time.time() - start:.0f} s)", flush=True)
    keys = list(next(iter(table[teachers[0]].values())))
    print(f"{'teacher':<16} {'category':<9} " + " ".join(f"{k:>14}" for k in keys))
    for teacher in teachers:
        cats = table[teacher]
        for category, row in [*cats.items(), ("mean", {k: float(np.mean([r[k] for r in
                                                                          cats.values()]))
                                                        for k in keys})]:
            print(f"{teacher:<16} {category:<9} " + " ".join(f"{row[k]:>14.3f}" for k in keys))
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()

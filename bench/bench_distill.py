"""Benchmark: PartDistill student, test-time alignment and pre-alignment.

Units come from the real lifting path: LabeledDB shapes (10k points) rendered into the
10 PartSLIP views (`render_points`), GLIP-like boxes from the simulated teacher
(`simulate_boxes`, which reads the ground truth and degrades it), `units_from_boxes`.
The same comparison as the dev set (bench/dev_shapes.py, where settings are chosen):
PartSLIP voting, TTA, TTA+BD, pre, pre+BD, and the teacher's confidence-weighted 2D
mIoU before/after re-scoring; LabeledDB is test data, run this once to report, never to
tune. Timed: `distill_tta` per shape (median, target <= 2 s) and `distill_pre` over the
shapes (target <= 60 s for 20), default DistillConfig. Quality is against a simulated
teacher, so it measures the distillation, not a real VLM; "lift" is the direct transfer
baseline (each point takes the confidence-weighted majority label of the units covering
it, uncovered points stay unlabelled and count as wrong).

Run: python bench/bench_distill.py [--category Chair] [--shapes 20] [--resolution 800]
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from dev_shapes import DevItem, evaluate

from partseg_cli.backproject import units_from_boxes
from partseg_cli.distill import DistillConfig, distill_tta
from partseg_cli.evaluate import part_ious
from partseg_cli.records import KnowledgeUnits
from partseg_cli.render import label_images, reference_cameras, render_points
from partseg_cli.shapes import discover, load_shape
from partseg_cli.simulated import simulate_boxes
from partseg_cli.superpoints import compute_superpoints
from partseg_cli.vote import vote

LABELEDDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "labeleddb"


def lift(units: KnowledgeUnits, n_parts: int) -> np.ndarray:
    """(N,) confidence-weighted majority label of the covering units, -1 if none."""
    votes = np.zeros((units.masks.shape[1], n_parts))
    np.add.at(votes.T, units.labels, units.masks * units.confidence[:, None])
    return np.where(votes.max(axis=1) > 0, votes.argmax(axis=1), -1)


def miou(pred: np.ndarray, gt: np.ndarray, n_parts: int) -> float:
    """ShapeNetPart convention: IoU 1 for a part absent from both."""
    return float(np.nan_to_num(part_ious(pred, gt, n_parts), nan=1.0).mean())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--category", default="Chair")
    parser.add_argument("--shapes", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=800)
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = LABELEDDB / args.category
    if not folder.exists():
        raise SystemExit(f"{folder} is missing: the benchmark needs the shared data")
    sources = sorted(discover(folder)[0], key=lambda s: s.shape_id)[:args.shapes]
    cameras = reference_cameras(10, args.resolution)
    t0 = time.perf_counter()
    items = []
    for source in sources:
        shape = load_shape(source)
        views = render_points(shape.points, shape.colors, cameras)
        n_parts = len(shape.part_names)
        gt_images = label_images(views, shape.point_labels)
        boxes = simulate_boxes(gt_images, n_parts, shape.part_names, seed=0, images=views.rgb,
                               foreground=views.pixel_point >= 0, category=shape.category)
        units = units_from_boxes(boxes, views.pixel_point, len(shape.points))
        sp = compute_superpoints(shape.points, shape.colors, shape.normals)
        voted = vote(units, boxes, views.pixel_point, sp, shape.points, shape.part_names,
                     instances=False)
        items.append(DevItem(shape, boxes, units, voted.point_labels, gt_images,
                             views.pixel_point >= 0))
    n_parts = len(items[0].shape.part_names)
    print(f"{args.category}: {len(items)} shapes, parts {items[0].shape.part_names}, "
          f"{np.mean([len(i.units) for i in items]):.0f} units/shape on average "
          f"(prepared in {time.perf_counter() - t0:.0f} s)")
    # One-off process warm-up (operator dispatch, allocator) is not per-shape cost.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        distill_tta(items[0].shape, items[0].units, n_parts, DistillConfig(device="cpu",
                                                                           epochs=2))
        scores = evaluate(items, DistillConfig(device="cpu"))
    lift_all = [miou(lift(i.units, n_parts), i.shape.point_labels, n_parts) for i in items]
    print(f"mIoU over {len(items)} shapes: vote {scores['vote']:.3f}, lift "
          f"{np.mean(lift_all):.3f}, TTA {scores['tta']:.3f}, TTA+BD {scores['tta+bd']:.3f}, "
          f"pre {scores['pre']:.3f}, pre+BD {scores['pre+bd']:.3f}")
    print(f"teacher 2D mIoU: before {scores['2d before']:.3f}, after rescoring (TTA) "
          f"{scores['2d after tta']:.3f}, (pre) {scores['2d after pre']:.3f}")
    print(f"distill_tta median {scores['tta s']:.2f} s per shape (target <= 2 s); "
          f"distill_pre over {len(items)} shapes {scores['pre s']:.1f} s (target <= 60 s); "
          f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()

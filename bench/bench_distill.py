"""Benchmark: PartDistill student, test-time alignment and pre-alignment.

Units come from the real lifting path: LabeledDB shapes (10k points) rendered into the
10 PartSLIP views (`render_points`), GLIP-like boxes from the simulated teacher
(`simulate_boxes`, which reads the ground truth and degrades it), `units_from_boxes`.
Timed: `distill_tta` per shape (target <= 2 s) and `distill_pre` over 20 shapes
(target <= 60 s), with the default DistillConfig; peak RSS of the process is printed.
Quality (mIoU against the ground truth) is against a simulated teacher, so it measures
the distillation, not a real VLM; "lift" is the direct transfer baseline (each point
takes the confidence-weighted majority label of the units covering it, uncovered
points stay unlabelled and count as wrong).

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

from partseg_cli.backproject import units_from_boxes
from partseg_cli.distill import DistillConfig, distill_pre, distill_tta
from partseg_cli.evaluate import part_ious
from partseg_cli.records import KnowledgeUnits
from partseg_cli.render import label_images, reference_cameras, render_points
from partseg_cli.shapes import discover, load_shape
from partseg_cli.simulated import simulate_boxes

LABELEDDB = Path("/work/shared/data/labeleddb")


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
    parser.add_argument("--tta-shapes", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=800)
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = LABELEDDB / args.category
    if not folder.exists():
        raise SystemExit(f"{folder} is missing: the benchmark needs the shared data")
    sources = sorted(discover(folder)[0], key=lambda s: s.shape_id)[:args.shapes]
    cameras = reference_cameras(10, args.resolution)
    t0 = time.perf_counter()
    data = []
    for source in sources:
        shape = load_shape(source)
        views = render_points(shape.points, shape.colors, cameras)
        n_parts = len(shape.part_names)
        boxes = simulate_boxes(label_images(views, shape.point_labels), n_parts,
                               shape.part_names, seed=0)
        data.append((shape, units_from_boxes(boxes, views.pixel_point, len(shape.points))))
    n_parts = len(data[0][0].part_names)
    print(f"{args.category}: {len(data)} shapes, parts {data[0][0].part_names}, "
          f"{np.mean([len(u) for _, u in data]):.0f} units/shape on average "
          f"(prepared in {time.perf_counter() - t0:.0f} s)")
    print(f"peak RSS before distillation: {peak_rss_mb():.0f} MB")

    config = DistillConfig(device="cpu")
    # One-off process warm-up (operator dispatch, allocator) is not per-shape cost.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        distill_tta(data[0][0], data[0][1], n_parts, DistillConfig(device="cpu", epochs=2))
    rows = {"lift": [], "tta": [], "tta (no BD)": []}
    times = []
    for shape, units in data[:args.tta_shapes]:
        gt = shape.point_labels
        rows["lift"].append(miou(lift(units, n_parts), gt, n_parts))
        t = time.perf_counter()
        result = distill_tta(shape, units, n_parts, config)
        times.append(time.perf_counter() - t)
        rows["tta"].append(miou(result.point_labels, gt, n_parts))
        no_bd = distill_tta(shape, units, n_parts, DistillConfig(device="cpu", backward=False))
        rows["tta (no BD)"].append(miou(no_bd.point_labels, gt, n_parts))
        bd = ("no" if result.bd_epoch is None else
              f"epoch {result.bd_epoch}{' (forced)' if result.bd_forced else ''}")
        print(f"  {shape.shape_id}: {len(shape.points)} points, {len(units)} units, "
              f"distill_tta {times[-1]:.2f} s, BD {bd}, mIoU lift {rows['lift'][-1]:.3f} "
              f"tta {rows['tta'][-1]:.3f} (no BD {rows['tta (no BD)'][-1]:.3f})")
    print(f"distill_tta: median {np.median(times):.2f} s, max {max(times):.2f} s per shape "
          f"(target <= 2 s: {'OK' if max(times) <= 2 else 'MISSED'}); "
          f"peak RSS {peak_rss_mb():.0f} MB")

    pre_config = DistillConfig(mode="pre", device="cpu")
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, results = distill_pre(data, n_parts, pre_config)
    t_pre = time.perf_counter() - t
    pre = [miou(r.point_labels, s.point_labels, n_parts) for (s, _), r in zip(data, results,
                                                                           strict=True)]
    lift_all = [miou(lift(u, n_parts), s.point_labels, n_parts) for s, u in data]
    bd = results[0].bd_epoch
    print(f"distill_pre over {len(data)} shapes: {t_pre:.1f} s (target <= 60 s: "
          f"{'OK' if t_pre <= 60 else 'MISSED'}), BD after epoch {bd}"
          f"{' (forced)' if results[0].bd_forced else ''}; peak RSS {peak_rss_mb():.0f} MB")
    print(f"mIoU over the first {len(rows['tta'])} shapes: "
          + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in rows.items())
          + f", pre {np.mean(pre[:len(rows['tta'])]):.3f}")
    print(f"mIoU over all {len(data)} shapes: lift {np.mean(lift_all):.3f}, "
          f"pre {np.mean(pre):.3f}")
    before = [float(u.confidence.mean()) for _, u in data]
    print(f"mean unit confidence before/after rescoring (pre): {np.mean(before):.3f} / "
          f"{np.mean([r.rescored_confidence.mean() for r in results]):.3f}")


if __name__ == "__main__":
    main()

"""Benchmark: lifting 2D predictions to knowledge units and PartSLIP voting.

Per shape: 10k points rendered by `partseg_cli.render.render_points` into the 10
PartSLIP views at 800x800, GLIP-like boxes (and CLIPSeg-like maps, SAM-like masks) from
the simulated teacher, PartSLIP superpoints. Timed: `units_from_boxes` + `vote`
(semantic + instances), target <= 0.3 s per shape; also the mask and pixel-map units.
Shapes: a synthetic chair (always available: seat, back, 4 legs, a wheel) and
LabeledDB shapes from ../shared/data when present. Quality figures (IoU against the
ground truth, instance counts) are with the simulated teacher, so they measure the
lifting, not a real VLM.

Run: python bench/bench_lift.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from partseg_cli.backproject import units_from_boxes, units_from_masks, units_from_pixel_maps
from partseg_cli.render import label_images, reference_cameras, render_points
from partseg_cli.shapes import discover, load_shape
from partseg_cli.simulated import simulate_boxes, simulate_masks, simulate_pixel_maps
from partseg_cli.superpoints import compute_superpoints
from partseg_cli.vote import vote

LABELEDDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "labeleddb"
REAL_SHAPES = ["Chair/101.off", "Airplane/61.off", "Cup/21.off", "Table/141.off"]
REPEATS = 5


def synthetic_chair(n: int, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Points on cuboid parts: (N, 3) float32 in the unit sphere, (N,) part label,
    (N,) instance id, part names."""
    rng = np.random.default_rng(seed)
    # (centre, half-size, part); the four legs are instances of one part.
    cuboids = [((0, 0, 0), (0.5, 0.06, 0.5), 0), ((0, 0.55, -0.46), (0.5, 0.5, 0.04), 1)]
    cuboids += [((sx, -0.5, sz), (0.04, 0.45, 0.04), 2)
                for sx in (-0.42, 0.42) for sz in (-0.42, 0.42)]
    cuboids.append(((0, -0.97, 0), (0.08, 0.03, 0.08), 3))
    half = np.array([h for _, h, _ in cuboids])
    areas = 8 * (half[:, 0] * half[:, 1] + half[:, 1] * half[:, 2] + half[:, 0] * half[:, 2])
    which = rng.choice(len(cuboids), n, p=areas / areas.sum())
    local = rng.uniform(-1, 1, (n, 3))
    axis = rng.integers(0, 3, n)
    local[np.arange(n), axis] = np.sign(local[np.arange(n), axis])  # onto a face
    pts = np.array([c for c, _, _ in cuboids])[which] + local * half[which]
    pts -= pts.mean(axis=0)
    pts /= np.linalg.norm(pts, axis=1).max()
    labels = np.array([p for _, _, p in cuboids])[which]
    return pts.astype(np.float32), labels.astype(np.int32), which, ["seat", "back", "leg",
                                                                     "wheel"]


def cases() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None,
                          list[str]]]:
    """(name, points, colors, normals or None, point labels, instances or None, names)."""
    points, labels, instances, names = synthetic_chair(10_000)
    out = [("synthetic-chair", points, np.full_like(points, 0.5), None, labels, instances,
            names)]
    for rel in REAL_SHAPES:
        if (LABELEDDB / rel).exists():
            shape = load_shape(discover(LABELEDDB / rel)[0][0])
            out.append((f"labeleddb/{rel}", shape.points, shape.colors, shape.normals,
                        shape.point_labels, shape.point_instances, shape.part_names))
    return out


def median_time(fn, *args, repeats: int = REPEATS) -> tuple[float, object]:
    """Median wall time of ``fn(*args)`` in seconds, and its last result."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), result


def main() -> None:
    torch.set_num_threads(1)
    cameras = reference_cameras(10, 800)
    totals = []
    for name, points, colors, normals, labels, instances, part_names in cases():
        n, n_parts = len(points), len(part_names)
        views = render_points(points, colors, cameras)
        pixel_point = views.pixel_point
        gt = label_images(views, labels)
        boxes = simulate_boxes(gt, n_parts, part_names, seed=0, images=views.rgb,
                               foreground=pixel_point >= 0)
        superpoints = compute_superpoints(points, colors, normals)

        t_units, units = median_time(units_from_boxes, boxes, pixel_point, n)
        t_vote, result = median_time(vote, units, boxes, pixel_point, superpoints, points,
                                     part_names)
        totals.append(t_units + t_vote)
        print(f"\n{name}: {n} points, {len(boxes)} boxes -> {len(units)} units, "
              f"{superpoints.max() + 1} superpoints, "
              f"{(pixel_point >= 0).sum() / len(pixel_point):.0f} fg pixels/view")
        print(f"  units_from_boxes {t_units * 1e3:6.1f} ms   vote {t_vote * 1e3:6.1f} ms   "
              f"total {(t_units + t_vote) * 1e3:6.1f} ms  (target <= 300 ms: "
              f"{'OK' if t_units + t_vote <= 0.3 else 'MISSED'})")
        pred = result.point_labels
        ious = [((pred == j) & (labels == j)).sum() / max(((pred == j) | (labels == j)).sum(), 1)
                for j in range(n_parts)]
        print("  IoU (glip-like simulated boxes): "
              + ", ".join(f"{p} {i:.2f}" for p, i in zip(part_names, ious, strict=True))
              + f"; mIoU {np.mean(ious):.3f}; unlabelled {np.mean(pred < 0):.3f}")
        truth = (f"truth {len(np.unique(instances[instances >= 0]))}"
                 if instances is not None else "no ground-truth instances")
        print(f"  instances {len(result.instance_scores)} ({truth})")

        if name == "synthetic-chair":
            masks = simulate_masks(gt, boxes, seed=0)
            maps = simulate_pixel_maps(gt, n_parts, part_names, seed=0)
            t_masks, mask_units = median_time(units_from_masks, boxes, masks, pixel_point, n,
                                              repeats=3)
            t_maps, map_units = median_time(units_from_pixel_maps, maps, pixel_point, n,
                                            repeats=3)
            print(f"  units_from_masks {t_masks * 1e3:6.1f} ms ({len(mask_units)} units)   "
                  f"units_from_pixel_maps {t_maps * 1e3:6.1f} ms ({len(map_units)} units)")
    print(f"\nunits_from_boxes + vote, worst shape: {max(totals) * 1e3:.1f} ms "
          f"(target <= 300 ms: {'OK' if max(totals) <= 0.3 else 'MISSED'})")


if __name__ == "__main__":
    main()

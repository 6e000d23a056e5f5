"""Calibration of the simulated teacher: its own 2D mIoU on rendered LabeledDB shapes.

The simulated teacher is a measuring instrument; this bench checks that the default
`glip-like` preset is about as good as GLIP in 2D, i.e. that its confidence-weighted 2D
mIoU (PartDistill supplementary Eq. A-D, `evaluate.teacher_miou_2d`) lies in GLIP's
measured band of roughly 0.40-0.60 (PartDistill Table 5: 42.8 airplane, 60.2 chair,
53.6 knife). Only this 2D figure is calibrated; no 3D method is looked at.

For each category (Airplane, Chair, Cup, Table) the first --shapes shapes of
/work/shared/data/labeleddb are loaded (10k points sampled on the mesh, per-face labels ->
per-point labels), ray-cast from the 10 PartSLIP reference views, turned into ground-truth
label images, and given to every preset. Printed per category and preset: mean 2D mIoU of
boxes (regions = box minus background), of SAM-like masks refining those boxes, and of
pixel maps (connected components of the argmax map, confidence = mean top probability),
plus the number of boxes per view.

    python bench/bench_teacher.py [--shapes 4] [--resolution 800] [--seeds 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from partseg_cli import evaluate, render, shapes, simulated  # noqa: E402
from partseg_cli.records import Shape  # noqa: E402

LABELEDDB = Path("/work/shared/data/labeleddb")
CATEGORIES = ["Airplane", "Chair", "Cup", "Table"]


def load_labeleddb(off: Path, n_points: int = 10000) -> Shape:
    """One LabeledDB mesh with per-point labels (points sampled on the labelled faces)."""
    sources, _ = shapes.discover(off.parent)
    source = next(s for s in sources if Path(s.path) == off)
    return shapes.load_shape(source, n_points=n_points)


def render_gt(render_module, shape: Shape, size: int, n_views: int = 10
              ) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth label images (V, H, W) int32 and foreground (V, H, W) bool."""
    views = render_module.render_shape(shape, render_module.reference_cameras(n_views, size))
    return render_module.label_images(views, shape.point_labels), views.pixel_point >= 0


def pixel_map_regions(probs: np.ndarray, foreground: np.ndarray, min_frac: float = 0.005
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Knowledge regions of a pixel teacher: connected components of the argmax map.

    Components smaller than min_frac of the view's foreground are dropped. Returns masks
    (K, H, W) bool, view (K,), label (K,), confidence (K,) = mean top probability.
    """
    p = probs.astype(np.float32)
    top, arg = p.max(-1), p.argmax(-1)
    masks, views, labels, conf = [], [], [], []
    for v in range(p.shape[0]):
        min_area = max(min_frac * np.count_nonzero(foreground[v]), 1)
        for r in range(p.shape[-1]):
            lab, n = ndimage.label(foreground[v] & (arg[v] == r), np.ones((3, 3), bool))
            if n == 0:
                continue
            area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
            mean_top = ndimage.mean(top[v], lab, np.arange(1, n + 1))
            for c in np.flatnonzero(area >= min_area):
                masks.append(lab == c + 1)
                views.append(v)
                labels.append(r)
                conf.append(mean_top[c])
    h, w = foreground.shape[1:]
    return (np.array(masks, bool).reshape(-1, h, w), np.array(views, int),
            np.array(labels, int), np.array(conf, np.float32))


def score_shape(gt: np.ndarray, foreground: np.ndarray, shape: Shape, preset: str,
                seed: int) -> dict[str, float]:
    n_parts = len(shape.part_names)
    boxes = simulated.simulate_boxes(gt, n_parts, shape.part_names, preset, seed)
    regions = evaluate.box_regions(boxes.xyxy, boxes.view, foreground)
    miou_boxes = evaluate.teacher_miou_2d(gt, regions, boxes.view, boxes.labels,
                                          boxes.confidence, n_parts)
    masks = simulated.simulate_masks(gt, boxes, seed, preset)
    miou_masks = evaluate.teacher_miou_2d(gt, masks.masks & foreground[boxes.view], boxes.view,
                                          boxes.labels, boxes.confidence, n_parts)
    maps = simulated.simulate_pixel_maps(gt, n_parts, shape.part_names, preset, seed)
    m, v, lab, conf = pixel_map_regions(maps.probs, foreground)
    miou_pixels = evaluate.teacher_miou_2d(gt, m, v, lab, conf, n_parts)
    return {"boxes": miou_boxes, "masks": miou_masks, "pixels": miou_pixels,
            "boxes/view": len(boxes) / gt.shape[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=4, help="shapes per category")
    parser.add_argument("--resolution", type=int, default=800, help="image side, pixels")
    parser.add_argument("--seeds", type=int, default=1, help="teacher seeds per shape")
    parser.add_argument("--presets", default=",".join(simulated.PRESETS))
    args = parser.parse_args()
    if not LABELEDDB.is_dir():
        sys.exit(f"{LABELEDDB} not found")
    torch.set_num_threads(1)
    presets = args.presets.split(",")
    print(f"LabeledDB, {args.shapes} shapes/category, 10 reference views at "
          f"{args.resolution}x{args.resolution} (mesh ray casting), 10k points, "
          f"{args.seeds} seed(s); confidence-weighted 2D mIoU (PartDistill supp. Eq. A-D)")
    start = time.time()
    table: dict[str, dict[str, list[dict[str, float]]]] = {p: {} for p in presets}
    for category in CATEGORIES:
        offs = sorted((LABELEDDB / category).glob("*.off"),
                      key=lambda f: int(f.stem) if f.stem.isdigit() else 0)[: args.shapes]
        for off in offs:
            shape = load_labeleddb(off)
            gt, fg = render_gt(render, shape, args.resolution)
            for preset in presets:
                for seed in range(args.seeds):
                    row = score_shape(gt, fg, shape, preset, seed)
                    table[preset].setdefault(category, []).append(row)
    keys = ["boxes", "masks", "pixels", "boxes/view"]
    print(f"{'preset':<10} {'category':<9} " + " ".join(f"{k:>10}" for k in keys))
    for preset in presets:
        cats = table[preset]
        for category, rows in [*cats.items(), ("mean", [r for rs in cats.values() for r in rs])]:
            means = [np.nanmean([r[k] for r in rows]) for k in keys]
            print(f"{preset:<10} {category:<9} " + " ".join(f"{m:>10.3f}" for m in means))
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()

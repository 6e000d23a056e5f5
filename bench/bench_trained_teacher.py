"""Trained 2D teacher: 2D mIoU on held-out shapes, training time and detection time.

Per category, the real stages run as a user runs them: render, `train-teacher` on the
first --train shapes (sorted ids), `detect --teacher trained` (boxes) and
`trained-pixels` on the other shapes (never the training ones), `backproject`; printed
are the teacher's confidence-weighted 2D mIoU on those held-out shapes
(`evaluate.teacher_scores_2d`, PartDistill suppl. Eq. A-D; GLIP's measured band is about
40-60), the training seconds, the detect seconds per shape and the load average of the
(shared) machine, and for the boxes: the cross-validated R^2 of predicting their
ground-truth purity from their features, the AUROC of confidence
for right vs wrong boxes, precision and recall. Wall and CPU seconds are both printed:
on a busy machine the CPU seconds (one thread: set OMP_NUM_THREADS=1) are what an idle
core would take.

--data dev (default) writes the procedural dev shapes of bench/dev_shapes.py as labelled
meshes (LabeledDB layout) and is where the teacher's defaults are chosen; --data
labeleddb (or a folder) is the shared test data: report only, never tune on it.

    python bench/bench_trained_teacher.py                        # dev set, defaults
    python bench/bench_trained_teacher.py --data labeleddb       # the figures to report
    python bench/bench_trained_teacher.py --set input_size=96 epochs=60   # a dev sweep
    python bench/bench_trained_teacher.py --categories airplane --set crop=true
    python bench/bench_trained_teacher.py --train 2 --test 2 --resolution 200 --set epochs=5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
import trimesh
from dev_shapes import MAKERS, PARTS

from partseg_cli import backproject, detect, render, train_teacher
from partseg_cli.evaluate import gt_label_images, teacher_scores_2d
from partseg_cli.records import Boxes, Shape, Views
from partseg_cli.shapes import ShapeSource, discover
from partseg_cli.store import Workspace, shape_scope
from partseg_cli.teacher_metrics import judge_boxes, pooled_box_scores, purity_r2

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_dev_meshes(root: Path, category: str, count: int, seed: int) -> Path:
    """Dev shapes ``0..count-1`` of ``category`` as ``<i>.off`` + ``<i>_labels.txt``."""
    folder = root / category
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        if (folder / f"{index}_labels.txt").exists():
            continue
        rng = np.random.default_rng([seed, index, list(MAKERS).index(category)])
        pieces = MAKERS[category](rng)
        mesh = trimesh.util.concatenate([m for _, m in pieces])
        labels = np.concatenate([np.full(len(m.faces), p) for p, m in pieces])
        mesh.export(folder / f"{index}.off")
        lines = []
        for part in np.unique(labels):
            lines += [PARTS[category][part], " ".join(map(str, np.flatnonzero(labels == part) + 1))]
        (folder / f"{index}_labels.txt").write_text("\n".join(lines) + "\n")
    return folder


def groups(args: argparse.Namespace) -> dict[str, list[ShapeSource]]:
    if args.data == "dev":
        root = Path(args.work) / "dev-data"
        folders = [write_dev_meshes(root, c, args.train + args.test, args.dev_seed)
                   for c in args.categories or list(MAKERS)]
        sources = [s for f in folders for s in discover(f)[0]]
    else:
        data = SHARED / "labeleddb" if args.data == "labeleddb" else Path(args.data)
        sources = discover(data)[0]
    by_category: dict[str, list[ShapeSource]] = {}
    for source in sorted(sources, key=lambda s: s.shape_id):
        if not args.categories or source.category in args.categories or args.data == "dev":
            by_category.setdefault(source.category, []).append(source)
    return by_category


def prepare(work: Workspace, sources: list[ShapeSource], args: argparse.Namespace) -> float:
    """Load and render; returns the seconds it took (0-ish when cached)."""
    started = time.perf_counter()
    render.ingest(work, sources, args.points, args.seed)
    report = render.run(work, [s.shape_id for s in sources], render.RenderConfig(
        n_views=args.views, resolution=args.resolution, n_points=args.points, seed=args.seed,
        device="cpu"))
    if report.failed:
        raise SystemExit(f"render failed: {report.failed}")
    return time.perf_counter() - started


def score(work: Workspace, ids: list[str], teacher: str, model: Path
          ) -> tuple[float, float, float]:
    """(mean 2D mIoU over ``ids``, detect wall and CPU seconds per shape)."""
    started, cpu = time.perf_counter(), time.process_time()
    detect.run(work, ids, detect.DetectConfig(teacher=teacher, model=str(model),
                                              device="cpu"), force=True)
    per_shape = (time.perf_counter() - started) / len(ids)
    cpu_per_shape = (time.process_time() - cpu) / len(ids)
    backproject.run(work, ids, backproject.BackprojectConfig())
    values = [teacher_scores_2d(work, work.read_record(shape_scope(sid), "shape", Shape))
              [0]["before"] for sid in ids]
    return float(np.nanmean(values)), per_shape, cpu_per_shape


def box_diagnostics(work: Workspace, ids: list[str]) -> dict[str, float]:
    """Over the stored boxes of ``ids``: cross-validated R^2 of box purity from the
    features, confidence AUROC right vs wrong, precision, recall (teacher_metrics)."""
    gts, boxes, verdicts = [], [], []
    for sid in ids:
        scope = shape_scope(sid)
        shape = work.read_record(scope, "shape", Shape)
        b = work.read_record(scope, "detect", Boxes)
        gt = gt_label_images(shape, work.read_record(scope, "render", Views))
        gts.append(gt)
        boxes.append(b)
        verdicts.append(judge_boxes(gt, b.view, b.xyxy, b.labels, b.confidence,
                                    len(shape.part_names)))
    pooled = pooled_box_scores(verdicts)
    return {"R2": purity_r2(gts, boxes), "AUROC": pooled["auroc"],
            "precision": pooled["precision"], "recall": pooled["recall"]}


def parse_overrides(items: list[str]) -> dict:
    """key=value TrainTeacherConfig overrides; "none" for an optional field's None."""
    types = {f.name: str(f.type) for f in fields(train_teacher.TrainTeacherConfig)}
    out = {}
    for item in items:
        key, value = item.split("=", 1)
        kind = types[key].removesuffix(" | None")
        if types[key] != kind and value.lower() == "none":
            out[key] = None
            continue
        out[key] = {"int": int, "float": float,
                    "bool": lambda v: v.lower() in ("1", "true", "yes")}.get(kind, str)(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="dev", help="dev, labeleddb or a folder")
    parser.add_argument("--categories", nargs="*", default=None)
    parser.add_argument("--train", type=int, default=8, help="training shapes per category")
    parser.add_argument("--test", type=int, default=8,
                        help="held-out shapes per category (dev; shared data: all others)")
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=800)
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dev-seed", type=int, default=100, help="dev_shapes.py's seed")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "partseg_bench_trained")
    parser.add_argument("--set", nargs="*", default=[],
                        help="TrainTeacherConfig overrides, e.g. input_size=96 epochs=60")
    args = parser.parse_args()
    config = replace(train_teacher.TrainTeacherConfig(device="cpu"),
                     **parse_overrides(args.set))
    print(f"data {args.data}; config {config.key_params()}; torch threads "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for category, sources in groups(args).items():
        train, test = sources[:args.train], sources[args.train:]
        if args.data == "dev":
            test = test[:args.test]
        if not test:
            print(f"{category}: no held-out shapes, skipped")
            continue
        work = Workspace.open(args.work / f"{args.data.replace('/', '_')}-{args.resolution}"
                              / category, create=True)
        render_s = prepare(work, train, args)
        load_before = os.getloadavg()[0]
        started, cpu = time.perf_counter(), time.process_time()
        model = args.work / "models" / category
        train_teacher.run(work, [s.shape_id for s in train], config, model, force=True)
        train_s, train_cpu = time.perf_counter() - started, time.process_time() - cpu
        meta = json.loads((model / "model.json").read_text())["meta"]
        losses = " ".join(f"{r['final_loss']:.3f}" for r in meta["restarts"])
        prepare(work, test, args)
        test_ids = [s.shape_id for s in test]
        boxes, box_s, box_cpu = score(work, test_ids, "trained", model)
        diagnostics = box_diagnostics(work, test_ids)
        pixels, pixel_s, pixel_cpu = score(work, test_ids, "trained-pixels", model)
        rows.append((boxes, pixels))
        print(f"{category:<10} train {len(train)} x {args.views} views: {train_s:6.1f} s "
              f"wall, {train_cpu:6.1f} s CPU (render {render_s:5.1f} s; load "
              f"{load_before:.1f}-{os.getloadavg()[0]:.1f}; {meta['epochs_trained']} epochs, "
              f"losses {losses}) | "
              f"held-out {len(test)}: 2D mIoU "
              f"boxes {100 * boxes:5.1f}  pixels {100 * pixels:5.1f} | detect s/shape wall "
              f"{box_s:.2f} CPU {box_cpu:.2f} (pixels {pixel_s:.2f} / {pixel_cpu:.2f}) | "
              + " ".join(f"{k} {v:.2f}" for k, v in diagnostics.items()), flush=True)
    if rows:
        mean = np.mean(rows, axis=0)
        print(f"{'mean':<10} 2D mIoU boxes {100 * mean[0]:5.1f}  pixels {100 * mean[1]:5.1f} "
              "(target: 40-60, GLIP's band)")


if __name__ == "__main__":
    main()

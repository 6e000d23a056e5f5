"""PartSTAD ablations (issue 10 part 6; the paper's Table 4 and supplementary).

Every shape goes through the real stages in a workspace (render, detect with the
simulated GLIP-like teacher or the trained one, sam-refine with GrabCut, superpoints,
backproject, vote)
and PartSTAD through `adapt` itself (train, save, apply). Per category the first
``--train`` shapes are PartSTAD's labelled training shapes; the others are scored
(`evaluate`, which reports the training shapes apart; they never enter a figure here).

Rows: voting on boxes (PartSLIP), voting on GrabCut masks (no weights), learned
weights on boxes (no masks), full (learned weights on masks); the relaxed-mIoU loss
against cross-entropy and the learned weights against the detector's confidence as the
weight (both on boxes). Columns: point mIoU (ShapeNetPart convention) per category and
their mean, then mean mAP50 part-aware / part-agnostic (ground-truth instances derived
as connected same-part regions where the data has none), training seconds per category
and applying seconds per shape (medians).

Data: ``--data dev`` (default; the procedural shapes of bench/dev_shapes.py, where
settings are chosen) or ``--data labeleddb`` (the shared test set: report only; 8
labelled shapes per category, the rest scored). The dev shapes keep their meshes and are
ray-cast with headlight shading as LabeledDB's meshes are (``--dev-render mesh``,
default); ``--dev-render points`` splats their points flat grey, where GrabCut has no
edge to follow inside the object.

Teacher: ``--teacher simulated`` (default, the de-leaked GLIP-like instrument) or
``--teacher trained``: `train-teacher` fitted per category on that category's
``--train`` labelled shapes (best effort; ``--target-miou T`` calibrates it on folds of
those shapes, which misses GLIP's band on the dev shapes: README), PartSTAD's own
training shapes (PartSLIP fine-tunes GLIP on the same few-shot shapes),
never on a scored one.

    python bench/bench_partstad.py                              # dev: 4 + 6 per category
    python bench/bench_partstad.py --data labeleddb --train 8 --teacher trained  # report
    python bench/bench_partstad.py --per-category 6 --train 3 --epochs 100 --resolution 300
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from partseg_cli import backproject, detect, render, sam_refine, superpoints, train_teacher, vote
from partseg_cli import evaluate as evaluation
from partseg_cli.adapt import AdaptConfig, partstad
from partseg_cli.store import Workspace, content_key, shape_scope

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEV_CATEGORIES = ("chair", "table", "mug", "lamp")
# (row name, knowledge-unit source, PartSTAD options or None for voting)
ROWS = (
    ("vote (boxes)", "boxes", None),
    ("vote (GrabCut masks)", "masks", None),
    ("PartSTAD weights, boxes", "boxes", {}),
    ("PartSTAD full (weights, masks)", "masks", {}),
    ("PartSTAD boxes, CE loss", "boxes", {"loss": "ce"}),
    ("PartSTAD boxes, confidence weight", "boxes", {"weights": "confidence"}),
)


def dev_workspace(work: Path, per_category: int, seed: int, mesh: bool
                  ) -> dict[str, list[str]]:
    """The dev shapes written into the workspace's "shape" stage (keyed by their
    recipe, with their meshes when ``mesh``); {category: shape ids}."""
    sys.path.insert(0, str(ROOT / "bench"))
    from dev_shapes import make_shape

    ws = Workspace.open(work, create=True)
    groups: dict[str, list[str]] = {}
    for category in DEV_CATEGORIES:
        for index in range(per_category):
            params = {"dev": category, "index": index, "seed": seed, "mesh": mesh}
            key = content_key("shape", 1, params, [])
            shape = None
            sid = f"{category}{index}"
            if ws.cached_key(shape_scope(sid), "shape") != key:
                shape = make_shape(category, index, seed, mesh=mesh)
                ws.write(shape_scope(sid), "shape", shape, key=key, params=params)
            groups.setdefault(category, []).append(sid)
    return groups


def labeleddb_workspace(work: Path, per_category: int, seed: int) -> dict[str, list[str]]:
    from partseg_cli.shapes import discover

    sources, _ = discover(SHARED / "labeleddb")
    chosen: dict[str, list] = {}
    for source in sources:
        if len(chosen.setdefault(source.category, [])) < per_category:
            chosen[source.category].append(source)
    ws = Workspace.open(work, create=True)
    render.ingest(ws, [s for group in chosen.values() for s in group], 10000, seed)
    return {c: [s.shape_id for s in group] for c, group in chosen.items()}


def prepare(ws: Workspace, groups: dict[str, list[str]], train: int, resolution: int,
            seed: int, masks: bool, teacher: str,
            target_miou: float | None = None) -> None:
    """Every stage PartSTAD and voting read, cached in the workspace (GrabCut masks only
    when a row uses them). A trained teacher learns each category's first ``train``
    shapes (the labelled ones) and detects on all of them."""
    ids = [sid for group in groups.values() for sid in group]
    reports = [render.run(ws, ids, render.RenderConfig(n_views=10, resolution=resolution,
                                                       n_points=10000, seed=seed))]
    for category, group in groups.items():
        if teacher == "trained":
            model = ws.root / "models" / f"teacher-{category}"
            reports.append(train_teacher.run(
                ws, group[:train], train_teacher.TrainTeacherConfig(target_miou=target_miou),
                model))
            config = detect.DetectConfig(teacher="trained", model=str(model))
        else:
            config = detect.DetectConfig(teacher="simulated", seed=seed)
        reports.append(detect.run(ws, group, config))
    if masks:
        reports.append(sam_refine.run(ws, ids, sam_refine.RefineConfig(model="grabcut",
                                                                       seed=seed)))
    reports.append(superpoints.run(ws, ids, superpoints.SuperpointConfig()))
    for report in reports:
        if report.failed:
            raise SystemExit(f"{report.stage} failed: {report.failed}")


def lift(ws: Workspace, ids: list[str], source: str) -> None:
    report = backproject.run(ws, ids, backproject.BackprojectConfig(source=source))
    if report.failed:
        raise SystemExit(f"backproject failed: {report.failed}")


def scores(ws: Workspace, test_ids: list[str], method: str) -> tuple[float, float, float]:
    """Point mIoU, mAP50 part-aware and part-agnostic (fractions) over ``test_ids``."""
    report, failed = evaluation.run(ws, test_ids, method)
    if failed:
        raise SystemExit(f"evaluate {method} failed: {failed}")
    assert report.training is None, "a training shape among the scored ones"
    aware = report.ap50_part_aware["mean"] if report.ap50_part_aware else float("nan")
    agnostic = (report.ap50_part_agnostic["mean"] if report.ap50_part_agnostic
                else float("nan"))
    return report.domains["points"].overall_miou, aware, agnostic


def run_partstad(ws: Workspace, train_ids: list[str], test_ids: list[str], options: dict,
                 name: str, epochs: int | None, seed: int) -> tuple[float, float]:
    """Train on ``train_ids`` and apply to ``test_ids`` (two `adapt` calls, as a user
    would); returns training seconds and the median applying seconds per shape."""
    common = AdaptConfig(train_ids=train_ids, model_name=name, epochs=epochs, seed=seed,
                         device="cpu", options=dict(options))
    started = time.perf_counter()
    partstad.run(ws, train_ids, common, force=True)
    trained = time.perf_counter() - started
    applying = AdaptConfig(apply=name, seed=seed, device="cpu", options={
        k: v for k, v in options.items() if k in ("threshold", "instances")})
    per_shape = []
    for sid in test_ids:
        started = time.perf_counter()
        partstad.run(ws, [sid], applying, force=True)
        per_shape.append(time.perf_counter() - started)
    return trained, statistics.median(per_shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=("dev", "labeleddb"), default="dev")
    parser.add_argument("--per-category", type=int, default=10)
    parser.add_argument("--train", type=int, default=4,
                        help="labelled training shapes per category (the paper: 8)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="PartSTAD epochs (default: the paper's 400)")
    parser.add_argument("--resolution", type=int, default=800)
    parser.add_argument("--teacher", choices=("simulated", "trained"), default="simulated")
    parser.add_argument("--target-miou", type=float,
                        default=0.0,
                        help="trained teacher: calibrate it to this 2D mIoU on folds of its "
                        "training shapes, e.g. 0.5 (0: the best-effort teacher)")
    parser.add_argument("--dev-render", choices=("mesh", "points"), default="mesh",
                        help="dev shapes: ray-cast shaded meshes (as LabeledDB) or flat "
                        "grey points")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--rows", default=",".join(str(i) for i in range(len(ROWS))),
                        help="comma-separated row numbers to run (0-based)")
    parser.add_argument("--work", type=Path, default=None,
                        help="workspace (default "
                        "<tmpdir>/bench_partstad_<data>_<resolution>_<teacher>)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    work = args.work or (Path(tempfile.gettempdir())
                         / f"bench_partstad_{args.data}_{args.resolution}_{args.teacher}")
    groups = (dev_workspace(work, args.per_category, args.seed, args.dev_render == "mesh")
              if args.data == "dev" else labeleddb_workspace(work, args.per_category, 0))
    ws = Workspace.open(work)
    every = [sid for ids in groups.values() for sid in ids]
    rows = [ROWS[int(i)] for i in args.rows.split(",")]
    started = time.perf_counter()
    prepare(ws, groups, args.train, args.resolution, args.seed,
            any(r[1] == "masks" for r in rows), args.teacher, args.target_miou or None)
    print(f"data {args.data}, teacher {args.teacher}: {len(groups)} categories, "
          f"{args.train} training + "
          f"{args.per_category - args.train} scored shapes each; stages "
          f"{time.perf_counter() - started:.0f} s; PartSTAD epochs "
          f"{args.epochs or partstad.PartstadConfig().epochs}", flush=True)
    categories = list(groups)
    header = (f"{'':<34}" + "".join(f"{c[:8]:>9}" for c in categories)
              + f"{'mIoU':>7}{'AP50':>7}{'AP50ag':>7}{'train s':>9}{'apply s':>9}")
    print(header)
    lifted = None
    for name, source, options in sorted(rows, key=lambda r: r[1]):  # lift once per source
        if source != lifted:
            lift(ws, every, source)
            lifted = source
        per_cat, aware, agnostic, train_s, apply_s = {}, [], [], [], []
        for category, ids in groups.items():
            train_ids, test_ids = ids[:args.train], ids[args.train:]
            if options is None:
                vote.run(ws, ids, vote.VoteConfig())
                method = "vote"
            else:
                t, a = run_partstad(ws, train_ids, test_ids, options,
                                    f"stad-{category}", args.epochs, args.seed)
                train_s.append(t)
                apply_s.append(a)
                method = "partstad"
            miou, ap, ap_agn = scores(ws, test_ids, method)
            per_cat[category] = miou
            aware.append(ap)
            agnostic.append(ap_agn)
        timing = (f"{statistics.median(train_s):>9.1f}{statistics.median(apply_s):>9.2f}"
                  if train_s else f"{'-':>9}{'-':>9}")
        print(f"{name:<34}" + "".join(f"{100 * per_cat[c]:>9.1f}" for c in categories)
              + f"{100 * np.mean(list(per_cat.values())):>7.1f}"
              + f"{100 * np.nanmean(aware):>7.1f}{100 * np.nanmean(agnostic):>7.1f}"
              + timing, flush=True)


if __name__ == "__main__":
    main()

"""Segmentation quality per category with the simulated teacher (a measuring instrument).

Runs the real stages (render, detect --teacher simulated, superpoints, backproject,
vote, and the PartDistill student in its modes) on labelled shared data and prints, per
category: the teacher's confidence-weighted 2D mIoU before and after re-scoring
(PartDistill suppl. Eq. 5-8) and the 3D mIoU (ShapeNetPart convention) of voting, TTA,
pre-alignment and pre-alignment + backward distillation.

No test label is used to choose anything: every setting is the stage's default.

    python bench/bench_quality.py                       # all LabeledDB categories
    python bench/bench_quality.py --per-category 5 --resolution 400   # quicker
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from partseg_cli import backproject, detect, render, superpoints, vote
from partseg_cli import evaluate as evaluate_stage
from partseg_cli.shapes import discover
from partseg_cli.store import Workspace

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def prepare(args: argparse.Namespace) -> tuple[Workspace, dict[str, list[str]]]:
    sources, problems = discover(args.data)
    by_category: dict[str, list] = {}
    for source in sources:
        by_category.setdefault(source.category, []).append(source)
    chosen = [s for group in by_category.values() for s in group[: args.per_category]]
    work = Workspace.open(args.work, create=True)
    started = time.perf_counter()
    reports = [render.ingest(work, chosen, args.points, args.seed)]
    ids = [s.shape_id for s in chosen]
    reports.append(render.run(work, ids, render.RenderConfig(
        n_views=10, resolution=args.resolution, n_points=args.points, seed=args.seed)))
    reports.append(detect.run(work, ids, detect.DetectConfig(
        teacher="simulated", preset=args.preset, seed=args.seed)))
    reports.append(superpoints.run(work, ids, superpoints.SuperpointConfig()))
    reports.append(backproject.run(work, ids, backproject.BackprojectConfig()))
    reports.append(vote.run(work, ids, vote.VoteConfig()))
    for report in reports:
        print(f"  {report.summary()}")
        for shape_id, problem in report.failed.items():
            print(f"    failed {shape_id}: {problem}")
    print(f"  stages up to voting: {time.perf_counter() - started:.1f} s "
          f"({len(ids)} shapes, {len(problems)} unusable files)")
    groups: dict[str, list[str]] = {}
    for source in chosen:
        groups.setdefault(source.category, []).append(source.shape_id)
    return work, groups


def method_scores(work: Workspace, groups: dict[str, list[str]], method: str
                  ) -> dict[str, float]:
    ids = [sid for group in groups.values() for sid in group]
    report, failed = evaluate_stage.run(work, ids, method, None, "shapenetpart")
    if failed:
        print(f"  {method}: {len(failed)} shapes not scored, e.g. {next(iter(failed.values()))}")
    data = report.to_json()
    return {cat: values["points"]["miou"] for cat, values in data["categories"].items()}


def teacher_scores(work: Workspace, groups: dict[str, list[str]]) -> dict[str, dict]:
    """Per category {"before": x, "after": y} (after only when `rescore` ran)."""
    ids = [sid for group in groups.values() for sid in group]
    report, _ = evaluate_stage.run(work, ids, "vote", None, "shapenetpart", teacher_2d=True)
    return {cat: values.get("teacher_miou_2d") or {}
            for cat, values in report.to_json()["categories"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "labeleddb")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-quality"))
    parser.add_argument("--per-category", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=800)
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--preset", default="glip-like")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="vote,tta,tta-bd,pre,pre-bd",
                        help="vote, and distill modes tta/pre, with -bd for backward "
                        "distillation")
    args = parser.parse_args()

    print(f"simulated teacher '{args.preset}' (a measuring instrument), data {args.data}")
    work, groups = prepare(args)
    columns: dict[str, dict[str, float]] = {"vote": method_scores(work, groups, "vote")}
    from partseg_cli import distill, rescore

    for method in args.methods.split(","):
        if method == "vote":
            continue
        mode, _, variant = method.partition("-")
        config = distill.DistillConfig(mode=mode, backward=variant == "bd", seed=args.seed)
        name = f"distill.{method}"
        started = time.perf_counter()
        # A pre-aligned student learns one category's collection (one part list).
        for ids in groups.values():
            distill.run(work, ids, config, output=name)
        print(f"  {name}: {time.perf_counter() - started:.1f} s")
        columns[method] = method_scores(work, groups, name)
    # the re-scores TTA+BD computed (`rescore` copies them, it trains nothing)
    if "tta-bd" in columns:
        for ids in groups.values():
            rescore.run(work, ids, "distill.tta-bd")
    teacher = teacher_scores(work, groups)

    header = f"{'category':<12}{'shapes':>7}{'2D before':>11}{'2D after':>10}"
    header += "".join(f"{m:>9}" for m in columns)
    print("\n3D mIoU (ShapeNetPart convention) and teacher 2D mIoU, in %")
    print(header)
    print("-" * len(header))
    for category, ids in groups.items():
        before = teacher.get(category, {}).get("before")
        after = teacher.get(category, {}).get("after")
        row = f"{category:<12}{len(ids):>7}"
        row += f"{_pct(before):>11}{_pct(after):>10}"
        row += "".join(f"{_pct(columns[m].get(category)):>9}" for m in columns)
        print(row)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


if __name__ == "__main__":
    main()

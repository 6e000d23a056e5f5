"""BiPart against PartDistill: joint and generalisation settings, Tables 3-5 of the paper.

Teacher: the simulated GLIP-like teacher (a measuring instrument: it reads ground
truth to make VLM-like noisy boxes; nothing else here does). Every method sees only
the knowledge units lifted from those boxes; ground truth scores the results.

Data: ``--data dev`` (default) is the procedural dev set of bench/dev_shapes.py (chair,
table, mug, lamp), on which BiPart's settings are chosen; ``--data labeleddb`` is the
shared LabeledDB test set (Airplane, Chair, Cup, Table), run to report only.

Each category's shapes split into a training half (BiPart's and PartDistill-pre's
training shapes, and the support pool) and a test half (scored). Settings:

- joint: train on the training halves of all categories, test on their test halves.
- generalisation: train on the training halves of the seen categories only; unseen
  categories are scored on their test halves, with supports drawn from their own
  training halves (unlabelled shapes with pseudo-labels, as the paper's Sec. 4.2).

Columns: PartDistill TTA (one head per test shape), PartDistill pre-aligned on the
training set (one student over several categories, a category's parts on the first
outputs as BiPart's head: the paper's PartDistill-J/-G), BiPart. Then Table 3 (the
ablations: no support / support without bi-level / bi-level without the extractor /
full) and Table 4 (support selection at training and inference) in the generalisation
setting, and Table 5 (inference time against support size and inner steps).

    python bench/bench_bipart.py                          # dev set, every table
    python bench/bench_bipart.py --data labeleddb         # report on the test set
    python bench/bench_bipart.py --per-category 6 --tables main   # quick
    python bench/bench_bipart.py --per-category 20 --train 16 --tables table4 --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from partseg_cli.adapt import bipart
from partseg_cli.adapt.bipart import BiPartConfig, Prepared
from partseg_cli.adapt.support import SELECTIONS, basis_points
from partseg_cli.distill import DistillConfig, distill_pre, distill_tta
from partseg_cli.evaluate import part_ious
from partseg_cli.records import KnowledgeUnits, Shape

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEV_SEEN, DEV_UNSEEN = ("chair", "table"), ("mug", "lamp")
SHARED_SEEN, SHARED_UNSEEN = ("Chair", "Table"), ("Airplane", "Cup", "Cap")


@dataclass
class Sample:
    shape: Shape
    units: KnowledgeUnits
    part_names: list[str]
    category: str


def dev_samples(category: str, count: int, seed: int, resolution: int) -> list[Sample]:
    """The dev set's shapes, teacher boxes and knowledge units (bench/dev_shapes.py,
    cached there)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from dev_shapes import prepare

    return [Sample(item.shape, item.units, list(item.shape.part_names), category)
            for item in prepare(category, count, seed, resolution)]


def shared_samples(work: Path, categories: tuple[str, ...], per_category: int,
                   resolution: int, seed: int, teacher: str, teacher_train: int,
                   teacher_options: dict) -> dict[str, list[Sample]]:
    """The shared data (LabeledDB; ShapeNetPart for Cap) through the real stages: render,
    detect (the simulated teacher, or ``trained``: `train-teacher` fitted per category on
    its first ``teacher_train`` shapes, sorted ids, which are then dropped: never scored,
    never a support or training shape), backproject. Up to ``per_category`` shapes per
    category after the teacher's."""
    from partseg_cli import backproject, detect, render, train_teacher
    from partseg_cli.distill import detected_part_names
    from partseg_cli.shapes import discover
    from partseg_cli.store import Workspace, shape_scope

    sources = discover(SHARED / "labeleddb")[0] + discover(SHARED / "shapenetpart")[0]
    held = teacher_train if teacher == "trained" else 0
    chosen: dict[str, list] = {}
    for source in sorted(sources, key=lambda s: s.shape_id):
        group = chosen.setdefault(source.category, [])
        if source.category in categories and len(group) < held + per_category:
            group.append(source)
    missing = [c for c in categories if not chosen.get(c)]
    if missing:
        raise SystemExit(f"no shared shapes of {', '.join(missing)}")
    flat = [s for c in categories for s in chosen[c]]
    ws = Workspace.open(work, create=True)
    reports = [render.ingest(ws, flat, 10000, seed)]
    reports.append(render.run(ws, [s.shape_id for s in flat], render.RenderConfig(
        n_views=10, resolution=resolution, n_points=10000, seed=seed, device="cpu")))
    kept: dict[str, list[str]] = {}
    for category in categories:
        ids = [s.shape_id for s in chosen[category]]
        kept[category] = ids[held:]
        if teacher == "trained":
            model = work / "models" / f"teacher-{category}"
            reports.append(train_teacher.run(ws, ids[:held], train_teacher.TrainTeacherConfig(
                **teacher_options), model))
            config = detect.DetectConfig(teacher="trained", model=str(model))
        else:
            config = detect.DetectConfig(teacher="simulated", seed=seed)
        reports.append(detect.run(ws, kept[category], config))
    reports.append(backproject.run(ws, [i for c in categories for i in kept[c]],
                                   backproject.BackprojectConfig()))
    for report in reports:
        if report.failed:
            raise SystemExit(f"{report.stage} failed: {report.failed}")
    out: dict[str, list[Sample]] = {}
    for category in categories:
        for sid in kept[category]:
            scope = shape_scope(sid)
            out.setdefault(category, []).append(Sample(
                ws.read_record(scope, "shape", Shape),
                ws.read_record(scope, "backproject", KnowledgeUnits),
                detected_part_names(ws, sid), category))
    return out


def miou(pred: np.ndarray, shape: Shape, part_names: list[str]) -> float:
    """ShapeNetPart convention (a part absent from both counts 1)."""
    index = {n: i for i, n in enumerate(part_names)}
    lookup = np.array([index[n] for n in shape.part_names] + [-1], np.int32)
    gt = lookup[shape.point_labels]
    return float(np.nan_to_num(part_ious(pred, gt, len(part_names)), nan=1.0).mean())


class Bench:
    """Prepared (encoded) shapes cached per network-input setting."""

    def __init__(self, splits: dict[str, tuple[list[Sample], list[Sample]]]):
        self.splits = splits
        self.cache: dict[tuple, Prepared] = {}
        self.trained: dict[tuple, tuple] = {}

    def prepared(self, sample: Sample, config: BiPartConfig, fresh: bool = False) -> Prepared:
        """The shape encoded for ``config``; ``fresh`` encodes it again (to time it)."""
        key = (sample.shape.shape_id, sample.category, config.n_sample, config.neighbours,
               config.seed, config.bps_points, config.class_weighting, config.encoder)
        if fresh or key not in self.cache:
            encoder = bipart.build_encoder_for(config, "cpu")
            basis = basis_points(config.bps_points, config.seed)
            self.cache[key] = bipart.prepare(sample.shape, sample.units, sample.part_names,
                                             encoder, config, "cpu", basis)
        return self.cache[key]

    def train(self, categories: tuple[str, ...], config: BiPartConfig):
        """BiPart trained on the training halves of ``categories`` (once per training
        setting: a later table asking for the same network reuses it)."""
        key = (categories, tuple(sorted(bipart.training_params(config).items())))
        if key not in self.trained:
            items = [self.prepared(s, config) for c in categories for s in self.splits[c][0]]
            self.trained[key] = bipart.train(items, config, "cpu")
        return self.trained[key]

    def score(self, net, categories: tuple[str, ...], config: BiPartConfig
              ) -> tuple[dict[str, float], str]:
        """mIoU per category of the test halves, supports from the training halves;
        and the median wall and CPU seconds per test shape (its encoding included; the
        CPU time is the fairer figure on a shared machine, with one torch thread)."""
        scores, seconds, cpu = {}, [], []
        for category in categories:
            train_half, test_half = self.splits[category]
            pool = [self.prepared(s, config) for s in train_half]
            # The support pool's extractor features are computed once (as `adapt` does
            # over a workspace); each target's time includes its own encoding.
            pool_feats = bipart.extract(net, pool)
            values = []
            for sample in test_half:
                started, cpu_started = time.perf_counter(), time.process_time()
                target = self.prepared(sample, config, fresh=True)
                items = [target, *pool]
                pools = [np.arange(len(items))] * len(items)
                features = {i + 1: f for i, f in enumerate(pool_feats)}
                probs = bipart.label_all(net, items, config, targets=[0], pools=pools,
                                         features=features)[0]
                seconds.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
                values.append(miou(probs.argmax(1), sample.shape, sample.part_names))
            scores[category] = float(np.mean(values))
        return scores, f"{np.median(seconds):.2f} s wall, {np.median(cpu):.2f} s CPU"


def partdistill_tta(bench: Bench, categories: tuple[str, ...]) -> dict[str, float]:
    config = DistillConfig(device="cpu")
    return {c: float(np.mean([miou(distill_tta(s.shape, s.units, len(s.part_names),
                                               config).point_labels, s.shape, s.part_names)
                              for s in bench.splits[c][1]])) for c in categories}


def partdistill_pre(bench: Bench, train_categories: tuple[str, ...],
                    test_categories: tuple[str, ...]) -> dict[str, float]:
    """One pre-aligned student over the training halves of ``train_categories``, its
    head as wide as the largest part list of every category (as BiPart's); each category
    reads its first outputs."""
    collection = [(s.shape, s.units) for c in train_categories for s in bench.splits[c][0]]
    width = max(len(bench.splits[c][1][0].part_names)
                for c in (*train_categories, *test_categories))
    student, _ = distill_pre(collection, width, DistillConfig(device="cpu", mode="pre"))
    out = {}
    for c in test_categories:
        values = []
        for s in bench.splits[c][1]:
            probs = student.predict(s.shape)[:, :len(s.part_names)]
            values.append(miou(probs.argmax(1), s.shape, s.part_names))
        out[c] = float(np.mean(values))
    return out


def _row(name: str, scores: dict[str, float], categories: tuple[str, ...],
         unseen: tuple[str, ...] = ()) -> str:
    """Per-category cells, their mean, and the unseen categories' mean when given."""
    cells = "".join(f"{100 * scores[c]:>9.1f}" for c in categories)
    row = f"{name:<34}{cells}{100 * np.mean([scores[c] for c in categories]):>9.1f}"
    return row + (f"{100 * np.mean([scores[c] for c in unseen]):>9.1f}" if unseen else "")


def _cost(report: bipart.TrainReport, inference: str) -> str:
    return (f"  training: {report.seconds:.0f} s wall, {report.cpu_seconds:.0f} s CPU, peak "
            f"RSS {report.peak_rss_mb:.0f} MB (the whole process); inference {inference} "
            "per shape (median)")


def _header(categories: tuple[str, ...], unseen: bool = False) -> str:
    return (f"{'':<34}" + "".join(f"{c[:8]:>9}" for c in categories) + f"{'mean':>9}"
            + (f"{'unseen':>9}" if unseen else ""))


def _moved(net, config: BiPartConfig) -> float:
    """||theta - theta_0|| / ||theta_0|| of the extractor's weights: how far training took
    it from its (seeded) random start (near 0: the extractor is still random)."""
    start = bipart.new_network(net.extractor.in_dim, net.head.n_outputs, config, "cpu")
    now, then = net.extractor.state_dict(), start.extractor.state_dict()
    diff = sum(float(((now[k] - then[k]) ** 2).sum()) for k in now)
    return (diff / max(sum(float((then[k] ** 2).sum()) for k in then), 1e-12)) ** 0.5


def _seeded_rows(bench: Bench, name: str, config: BiPartConfig, seeds: list[int],
                 seen: tuple[str, ...], categories: tuple[str, ...]) -> dict[str, float]:
    """Train on ``seen`` and score ``categories`` once per seed; print each seed's row
    (when more than one) and the mean over seeds; return the mean."""
    runs = []
    for seed in seeds:
        variant = dataclasses.replace(config, seed=seed)
        net, report = bench.train(seen, variant)
        runs.append(bench.score(net, categories, variant)[0])
        print(f"  {name}, seed {seed}: training {report.seconds:.0f} s wall, "
              f"{report.cpu_seconds:.0f} s CPU; extractor moved "
              f"{100 * _moved(net, variant):.2f}% from its initialisation", flush=True)
        if len(seeds) > 1:
            print(_row(f"  {name}, seed {seed}", runs[-1], categories), flush=True)
    mean = {c: float(np.mean([r[c] for r in runs])) for c in categories}
    print(_row(name if len(seeds) == 1 else f"{name}, mean", mean, categories), flush=True)
    return mean


def parse_teacher_options(items: list[str]) -> dict:
    """``key=value`` TrainTeacherConfig overrides (bench_trained_teacher's parser)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_trained_teacher import parse_overrides

    return parse_overrides(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=("dev", "labeleddb"), default="dev")
    parser.add_argument("--per-category", type=int, default=12,
                        help="shapes per category, --train training/support, the rest test")
    parser.add_argument("--train", type=int, default=None,
                        help="training/support shapes per category (default: half); Table "
                        "4 needs more than --support-size - 1 of them to choose from")
    parser.add_argument("--seen", nargs="*", default=None,
                        help="training categories (dev default: chair table; dev_shapes.py "
                        "also makes airplane)")
    parser.add_argument("--unseen", nargs="*", default=None,
                        help="held-out categories (dev default: mug lamp)")
    parser.add_argument("--rows", default="1,2,3,4", help="Table 3's rows to run")
    parser.add_argument("--selections", nargs="*", default=list(SELECTIONS),
                        help="support selections of Table 4 (one heavy run each fits)")
    parser.add_argument("--teacher", choices=("simulated", "trained"), default="simulated",
                        help="shared data only: the teacher (dev: always simulated)")
    parser.add_argument("--teacher-train", type=int, default=8,
                        help="--teacher trained: shapes per category it is fitted on "
                        "(dropped from everything else)")
    parser.add_argument("--teacher-set", nargs="*", default=[],
                        help="TrainTeacherConfig overrides, e.g. epochs=60")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0],
                        help="BiPart seeds (initialisation, samples, random supports) of "
                        "Tables 3 and 4; each seed's row, then their mean")
    parser.add_argument("--resolution", type=int, default=400)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "bench_bipart_labeleddb")
    parser.add_argument("--tables", default="main,table3,table4,table5",
                        help="comma-separated: main (joint + generalisation), gen "
                        "(generalisation only), table3, "
                        "table4, table4i (one network, the selections at inference only), "
                        "table5")
    parser.add_argument("--set", nargs="*", default=[],
                        help="BiPartConfig overrides, e.g. epochs=10 lr=1e-4")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        current = getattr(BiPartConfig(), key)
        overrides[key] = (value.lower() in ("1", "true", "yes") if isinstance(current, bool)
                          else type(current)(value))
    config = BiPartConfig(device="cpu", seed=0, **overrides)
    tables = set(args.tables.split(","))

    if args.data == "dev":
        seen, unseen = DEV_SEEN, DEV_UNSEEN
    else:
        seen, unseen = SHARED_SEEN, SHARED_UNSEEN
    seen = tuple(args.seen) if args.seen is not None else seen
    unseen = tuple(args.unseen) if args.unseen is not None else unseen
    everything = seen + unseen
    if args.data == "dev":
        groups = {c: dev_samples(c, args.per_category, args.seed, args.resolution)
                  for c in everything}
    else:
        groups = shared_samples(args.work, everything, args.per_category, args.resolution, 0,
                                args.teacher, args.teacher_train,
                                parse_teacher_options(args.teacher_set))
    splits = {}
    for c in everything:
        n = len(groups[c]) // 2 if args.train is None else args.train
        if args.data != "dev":  # Cap has fewer shared shapes: keep half of them scored
            n = min(n, len(groups[c]) // 2)
        splits[c] = (groups[c][:n], groups[c][n:])
    bench = Bench(splits)
    if not config.head_outputs:  # the paper: the largest part count of the whole dataset
        config = dataclasses.replace(config, head_outputs=max(
            len(groups[c][0].part_names) for c in everything))
    half = min(len(train) for train, _ in splits.values())
    teacher = (f"trained teacher ({args.teacher_train} shapes per category, "
               f"{parse_teacher_options(args.teacher_set) or 'defaults'})"
               if args.data != "dev" and args.teacher == "trained" else "simulated teacher")
    print(f"data {args.data}, training/support + test shapes per category: "
          + ", ".join(f"{c} {len(a)}+{len(b)}" for c, (a, b) in splits.items())
          + f"; {teacher}; {args.resolution} px; torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}; BiPart {dataclasses.asdict(config)}; "
          f"seeds {args.seeds}", flush=True)

    if "main" in tables or "gen" in tables:
        tta = partdistill_tta(bench, everything)
    if "main" in tables:
        print("\njoint (all categories trained), test-half mIoU %")
        print(_header(everything))
        print(_row("PartDistill TTA", tta, everything))
        print(_row("PartDistill pre (joint)", partdistill_pre(bench, everything, everything),
                   everything), flush=True)
        net, report = bench.train(everything, config)
        scores, seconds = bench.score(net, everything, config)
        print(_row("BiPart-J", scores, everything))
        print(_cost(report, seconds), flush=True)
    if "main" in tables or "gen" in tables:
        print(f"\ngeneralisation (trained on {', '.join(seen)}), test-half mIoU %")
        print(_header(everything, unseen=True))
        print(_row("PartDistill TTA", tta, everything, unseen))
        print(_row("PartDistill pre (seen only)", partdistill_pre(bench, seen, everything),
                   everything, unseen), flush=True)
        net, report = bench.train(seen, config)
        scores, seconds = bench.score(net, everything, config)
        print(_row("BiPart-G", scores, everything, unseen))
        print(_cost(report, seconds), flush=True)
    if "main" in tables:
        high_lr = dataclasses.replace(config, lr=1e-3)
        net, _ = bench.train(seen, high_lr)
        print(_row("BiPart-G, lr 1e-3 (paper 1e-4)", bench.score(net, everything, high_lr)[0],
                   everything), flush=True)

    if "table3" in tables:
        print(f"\nTable 3 (generalisation, trained on {', '.join(seen)}), test-half mIoU %")
        print(_header(everything))
        variants = [
            ("1 no support, no bi-level, no extr.",
             dict(blocks=0, bilevel=False, test_inner_steps=0)),
            ("2 support, no bi-level, no extr.", dict(blocks=0, bilevel=False)),
            ("3 support + bi-level, no extractor", dict(blocks=0)),
            ("4 full", {}),
        ]
        for name, change in [variants[int(r) - 1] for r in args.rows.split(",")]:
            _seeded_rows(bench, name, dataclasses.replace(config, **change), args.seeds,
                         seen, everything)

    if "table4" in tables:
        print(f"\nTable 4 (generalisation, trained on {', '.join(seen)}), test-half mIoU %")
        if half < config.support_size:
            print(f"  (a pool of {half} shapes fills a support set of {config.support_size}: "
                  "every selection takes all of it; use --train >= "
                  f"{2 * config.support_size})")
        print(_header(everything))
        for selection in args.selections:
            _seeded_rows(bench, selection, dataclasses.replace(config, support=selection),
                         args.seeds, seen, everything)

    if "table4i" in tables:
        print(f"\nTable 4, selection at inference only (trained with --support "
              f"{config.support} on {', '.join(seen)}), test-half mIoU %")
        print(_header(everything))
        for seed in args.seeds:
            trained = dataclasses.replace(config, seed=seed)
            net, _ = bench.train(seen, trained)
            for selection in args.selections:
                variant = dataclasses.replace(trained, support=selection)
                print(_row(f"{selection}, seed {seed}", bench.score(net, everything,
                                                                     variant)[0],
                           everything), flush=True)

    if "table5" in tables:
        print(f"\nTable 5 (generalisation model, unseen {', '.join(unseen)}): mIoU % and "
              "seconds per shape (median, target encoding included)")
        net, _ = bench.train(seen, config)
        for size in (1, 2, 4, 8, 12):
            variant = dataclasses.replace(config, support_size=size)
            scores, seconds = bench.score(net, unseen, variant)
            print(f"  support {size:>2}, steps {config.test_inner_steps:>2}: "
                  f"{100 * np.mean(list(scores.values())):5.1f}  {seconds}", flush=True)
        for steps in (5, 10, 15, 20):
            variant = dataclasses.replace(config, test_inner_steps=steps)
            scores, seconds = bench.score(net, unseen, variant)
            print(f"  support {config.support_size:>2}, steps {steps:>2}: "
                  f"{100 * np.mean(list(scores.values())):5.1f}  {seconds}", flush=True)
        # The inner loss sums over the support set (Eq. 3), so its step grows with the
        # support size: the rate divided by the size is the mean loss's step.
        for lr in sorted({config.test_inner_lr / config.support_size, 0.1,
                          config.test_inner_lr, 1.0}):
            variant = dataclasses.replace(config, test_inner_lr=lr)
            scores, _ = bench.score(net, unseen, variant)
            print(f"  support {config.support_size:>2}, steps {config.test_inner_steps:>2}, "
                  f"inner lr {lr:.4f}: {100 * np.mean(list(scores.values())):5.1f}  "
                  + " ".join(f"{c} {100 * v:.1f}" for c, v in scores.items()), flush=True)


if __name__ == "__main__":
    main()

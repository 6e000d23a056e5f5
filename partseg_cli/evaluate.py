"""Metrics and the evaluation report: part IoU, mIoU under two conventions, mAP50, 2D mIoU.

Conventions differ between the papers this package reproduces, so every figure says which
one it follows (see reference-details.md, "Evaluation conventions"):

- ``"shapenetpart"`` (PartDistill, PointCLIP V2): per shape, mean IoU over the category's
  parts with IoU = 1 when a part is absent from both prediction and ground truth; category
  mIoU = mean over shapes; overall = mean over categories. Per-part figures are that part's
  IoU averaged over all shapes of the category (same absent rule).
- ``"partnete"`` (PartSLIP, PartSLIP++): per part, IoU averaged over the shapes whose ground
  truth contains the part; category mIoU = mean over those parts; overall = mean over
  categories.

A part the prediction names but a shape's ground truth does not (its label list lacks
it: a LabeledDB airplane without engines loaded alone, or `--parts` naming a part the data
does not have) is scored as a part absent from that shape's ground truth, under either
convention: "shapenetpart" IoU 0 when any point is predicted as it, else 1; "partnete"
the shape does not count for it. Either way the points predicted as it are wrong for the
part they belong to. A ground-truth part the prediction does not name is scored like any
part never predicted (IoU 0 where the shape has it).

Ground-truth points labelled -1 (unlabelled / "other") are ignored; a prediction of -1 on
a labelled point counts as wrong. All figures are fractions in [0, 1]; the terminal table
shows them as percentages with one decimal. Undefined figures are NaN (``null`` in JSON,
empty in CSV).
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, PartsegError
from .records import Boxes, KnowledgeUnits, Labelling, Masks, Mesh, Shape, Views
from .store import Workspace, shape_scope
from .teacher_metrics import (
    BOX_LABELS,
    BOX_SCORES,
    BoxVerdicts,
    box_regions,
    judge_boxes,
    pooled_box_scores,
    teacher_miou_2d,
)

CONVENTIONS = ("shapenetpart", "partnete")
DOMAINS = ("points", "faces")
AP_IOU_THRESHOLD = 0.5
# PartNet's 101 recall thresholds 0, 0.01, ..., 1 (exact decimals, not an arange's drift).
_RECALL_THRESHOLDS = np.arange(101) / 100.0
CSV_HEADER = ["category", "part", "domain", "value", "count", "shape"]
OVERALL = "(overall)"
MEAN = "(mean)"
PROVENANCE = "(provenance)"


# --- semantic IoU -------------------------------------------------------------------------


def part_ious(pred: np.ndarray, gt: np.ndarray, n_parts: int,
              weights: np.ndarray | None = None) -> np.ndarray:
    """IoU of every part of one shape.

    pred, gt: (N,) int part labels in [-1, n_parts); gt == -1 elements are ignored, a pred
    of -1 on a labelled element is simply wrong. weights: optional (N,) float (e.g. face
    areas) making the IoU a weighted one. Returns (n_parts,) float64, NaN where the part
    is absent from both pred and gt (union zero).
    """
    pred = np.asarray(pred).ravel()
    gt = np.asarray(gt).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"pred has {pred.size} labels, gt {gt.size}")
    for name, arr in (("pred", pred), ("gt", gt)):
        if arr.size and (arr.min() < -1 or arr.max() >= n_parts):
            raise ValueError(f"{name} labels outside [-1, {n_parts})")
    keep = gt >= 0
    p, g = pred[keep], gt[keep]
    w = None if weights is None else np.asarray(weights, np.float64).ravel()[keep]
    hit = p == g
    inter = np.bincount(g[hit], None if w is None else w[hit], minlength=n_parts)
    gt_size = np.bincount(g, w, minlength=n_parts)
    labelled = p >= 0
    pred_size = np.bincount(p[labelled], None if w is None else w[labelled],
                            minlength=n_parts)
    union = (gt_size + pred_size - inter).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


# --- inputs and report --------------------------------------------------------------------


@dataclass
class ShapeEval:
    """Everything needed to score one shape (labels index into ``part_names``).

    gt_points / pred_points: (N,) int, -1 = unlabelled (ignored in gt, wrong in pred).
    gt_faces / pred_faces: (F,) int, same rules; face_areas: (F,) float, makes the face
    IoU area-weighted. gt_instances / pred_instances: (N,) int instance ids, -1 none;
    predicted ids index pred_instance_labels (I,) int and pred_instance_scores (I,) float.
    When labels are missing each predicted instance takes the majority of pred_points over
    its points; when scores are missing all instances score 1.
    """

    shape_id: str
    category: str
    part_names: list[str]
    gt_points: np.ndarray
    pred_points: np.ndarray
    gt_faces: np.ndarray | None = None
    pred_faces: np.ndarray | None = None
    face_areas: np.ndarray | None = None
    gt_instances: np.ndarray | None = None
    pred_instances: np.ndarray | None = None
    pred_instance_labels: np.ndarray | None = None
    pred_instance_scores: np.ndarray | None = None
    gt_instances_derived: bool = False  # gt_instances from `derived_instances`

    @property
    def has_faces(self) -> bool:
        return self.gt_faces is not None and self.pred_faces is not None

    @property
    def has_instances(self) -> bool:
        return self.gt_instances is not None and self.pred_instances is not None


@dataclass
class DomainScores:
    """Semantic scores of one domain ("points" or "faces"), fractions in [0, 1], NaN = undefined.

    part_iou[c]: per part of category c, in part_names order. part_count[c]: shapes that
    entered each part's average. instance_miou: mean over all shapes of the shape mIoU
    (ShapeNetPart's "instance average"; NaN under "partnete").
    """

    part_iou: dict[str, list[float]]
    part_count: dict[str, list[int]]
    category_miou: dict[str, float]
    n_shapes: dict[str, int]
    overall_miou: float
    instance_miou: float


@dataclass
class EvalReport:
    """Per part, per category and overall scores, for points and (when present) faces, plus
    mAP50 part-aware / part-agnostic when instances were given. Fractions in [0, 1]."""

    convention: str
    categories: list[str]
    part_names: dict[str, list[str]]
    n_shapes: dict[str, int]
    domains: dict[str, DomainScores]
    ap50_part_aware: dict[str, float] | None = None
    ap50_part_agnostic: dict[str, float] | None = None
    gt_instance_counts: dict[str, int] = field(default_factory=dict)
    # {"before": {category: mIoU2D, "mean": x}, "after": {...} when re-scored} (run only)
    teacher_2d: dict[str, dict[str, float]] | None = None
    # Shapes the method learned from (Labelling.training_shape), scored apart: never
    # test figures (run only). training_ids lists them.
    training: EvalReport | None = None
    training_ids: list[str] = field(default_factory=list)
    # One row per scored shape (``shape_rows``), and where the numbers come from: method,
    # convention, teacher(s), partseg version, workspace (run adds them, and per-shape keys)
    shapes: list[dict] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    # {"precision" | "recall" | "auroc" | "auroc_after": {category: x, "mean": y}}: the
    # teacher's boxes against ground-truth part components (run only; box teachers only)
    teacher_boxes: dict[str, dict[str, float]] | None = None
    # shapes whose ground-truth instances were derived (`derived_instances`), not given
    derived_instance_shapes: int = 0

    def table(self, parts: bool = True) -> str:
        """Fixed-width terminal table, percentages with one decimal ("-" = undefined).

        One row per category plus an overall row; with ``parts``, a per-part section
        follows (one wrapped line per category and domain) so 45 categories stay readable.
        """
        cols = [(f"{d} mIoU", d) for d in self.domains]
        if self.ap50_part_aware is not None:
            cols.append(("mAP50 aware", "aware"))
        if self.ap50_part_agnostic is not None:
            cols.append(("mAP50 agn.", "agnostic"))
        cols += [(f"2D {when}", when) for when in self.teacher_2d or {}]
        cols += [(BOX_LABELS[name], f"box:{name}") for name in self.teacher_boxes or {}]
        width = max([len("category"), len(OVERALL)] + [len(c) for c in self.categories])
        header = f"{'category':<{width}}  {'shapes':>6}" + "".join(f"  {c}" for c, _ in cols)
        lines = [f"convention: {self.convention}  (figures in %)", header, "-" * len(header)]

        def cell(category: str | None, label: str, key: str) -> str:
            if key in self.domains:
                scores = self.domains[key]
                value = scores.overall_miou if category is None else scores.category_miou.get(
                    category, math.nan)
            else:
                table = {"aware": self.ap50_part_aware, "agnostic": self.ap50_part_agnostic,
                         **(self.teacher_2d or {}),
                         **{f"box:{n}": t for n, t in (self.teacher_boxes or {}).items()}}[key]
                value = table.get("mean" if category is None else category, math.nan)
            return f"  {_pct(value):>{len(label)}}"

        for c in self.categories:
            lines.append(f"{c:<{width}}  {self.n_shapes[c]:>6}"
                         + "".join(cell(c, label, k) for label, k in cols))
        lines.append("-" * len(header))
        lines.append(f"{OVERALL:<{width}}  {sum(self.n_shapes.values()):>6}"
                     + "".join(cell(None, label, k) for label, k in cols))
        if self.derived_instance_shapes:
            lines.append(f"mAP50: ground-truth instances of {self.derived_instance_shapes} "
                         "shape(s) derived as connected same-part regions (the data gives "
                         "none)")
        inst = self.domains["points"].instance_miou
        if not math.isnan(inst):
            lines.append(f"instance-average point mIoU (mean over shapes): {_pct(inst)}")
        if parts:
            lines.append("")
            lines.append("per-part IoU (%)" + (", mAP50 part-aware" if self.ap50_part_aware
                                                 is not None else ""))
            for c in self.categories:
                for d, scores in self.domains.items():
                    if c in scores.part_iou:
                        pairs = zip(self.part_names[c], scores.part_iou[c], strict=True)
                        lines.extend(_wrap(f"{c} [{d}]", [f"{n} {_pct(v)}" for n, v in pairs]))
                if self.ap50_part_aware is not None and c in self.ap50_part_aware:
                    lines.extend(_wrap(f"{c} [mAP50]", [
                        f"{n} {_pct(self.ap50_part_aware.get(f'{c}/{n}', math.nan))}"
                        for n in self.part_names[c]]))
        if self.training is not None:
            lines += ["", f"training shapes ({len(self.training_ids)}): the method learned "
                      "from them; not test figures, not in the figures above",
                      self.training.table(parts=False)]
        return "\n".join(lines)

    def to_json(self) -> dict:
        """JSON-ready dict (``json.dumps`` works; NaN becomes null). Keys:

        ``schema`` ("partseg.eval/1"), ``convention``, ``units`` ("fraction"),
        ``overall``: {"points": {"miou", "instance_miou"}, "faces": {...} when present,
        "ap50_part_aware", "ap50_part_agnostic" (null when no instances)},
        ``categories``: {name: {"n_shapes", "parts": [names],
        "points"/"faces": {"miou", "part_iou": {part: iou}, "part_count": {part: shapes}},
        "ap50_part_aware": {"mean", "part_ap": {part: ap}} | null,
        "ap50_part_agnostic": float | null, "teacher_miou_2d": {"before", "after"?} | null,
        "teacher_boxes": {"precision", "recall", "auroc", "auroc_after"?} | null}}
        (AP null when the category had no instances); ``overall`` also has
        "teacher_miou_2d": {"before": x, "after": y (only when re-scored)} | null and
        "teacher_boxes" (means over categories; null without --teacher-2d or box teacher).
        ``shapes``: one row per scored shape (``shape_rows``) with its "keys" (shape,
        detect, labelling) and "teacher"; ``provenance``: {"method", "convention",
        "teachers", "partseg_version", "workspace"}.
        ``training_shapes``: {"shape_ids": [...], "report": this same schema} for the
        shapes the method learned from (kept out of every figure above), or null.
        ``derived_instance_shapes``: how many shapes' mAP50 ground-truth instances were
        derived (`derived_instances`) because the data gives none.
        """
        overall: dict = {d: {"miou": _num(s.overall_miou), "instance_miou": _num(s.instance_miou)}
                         for d, s in self.domains.items()}
        overall["ap50_part_aware"] = _num(self.ap50_part_aware["mean"]) \
            if self.ap50_part_aware is not None else None
        overall["ap50_part_agnostic"] = _num(self.ap50_part_agnostic["mean"]) \
            if self.ap50_part_agnostic is not None else None
        t2d = self.teacher_2d
        overall["teacher_miou_2d"] = None if t2d is None else {
            when: _num(v["mean"]) for when, v in t2d.items()}
        tb = self.teacher_boxes
        overall["teacher_boxes"] = None if tb is None else {
            name: _num(v["mean"]) for name, v in tb.items()}
        categories = {}
        for c in self.categories:
            names = self.part_names[c]
            entry: dict = {"n_shapes": self.n_shapes[c], "parts": list(names)}
            for d, s in self.domains.items():
                if c in s.part_iou:
                    entry[d] = {
                        "miou": _num(s.category_miou[c]),
                        "part_iou": {n: _num(v) for n, v in zip(names, s.part_iou[c],
                                                                strict=True)},
                        "part_count": dict(zip(names, s.part_count[c], strict=True)),
                    }
            aware, agnostic = self.ap50_part_aware, self.ap50_part_agnostic
            entry["ap50_part_aware"] = None if aware is None or c not in aware else {
                "mean": _num(aware.get(c, math.nan)),
                "part_ap": {n: _num(aware.get(f"{c}/{n}", math.nan)) for n in names}}
            entry["ap50_part_agnostic"] = None if agnostic is None else _num(
                agnostic.get(c, math.nan))
            entry["teacher_miou_2d"] = None if t2d is None else {
                when: _num(v.get(c, math.nan)) for when, v in t2d.items()}
            entry["teacher_boxes"] = None if tb is None or all(
                c not in v for v in tb.values()) else {
                name: _num(v.get(c, math.nan)) for name, v in tb.items()}
            categories[c] = entry
        training = None if self.training is None else {
            "shape_ids": list(self.training_ids), "report": self.training.to_json()}
        return {"schema": "partseg.eval/1", "convention": self.convention, "units": "fraction",
                "overall": overall, "categories": categories, "training_shapes": training,
                "derived_instance_shapes": self.derived_instance_shapes,
                "provenance": self.provenance, "shapes": self.shapes}

    def to_csv(self) -> str:
        """CSV text with header ``category,part,domain,value,count,shape``.

        One row per (category, part, domain) with domain in points, faces, ap50_part_aware;
        summary rows have part "(mean)" (category mIoU / mAP), category "(overall)" for the
        mean over categories; domains ap50_part_agnostic, teacher_2d_before /
        teacher_2d_after (confidence-weighted mIoU2D) and teacher_box_precision /
        _recall / _auroc / _auroc_after have only summary rows.
        value: fraction in [0, 1], empty when undefined. count: shapes averaged over (IoU
        rows), ground-truth instances (AP rows), categories with a value (overall rows).
        Categories without instances have no AP rows. Shapes the method learned from are
        not in the CSV (see ``to_json``'s ``training_shapes``).
        ``shape`` is empty on those rows; the per-shape rows that follow
        name their shape there (part IoU and "(mean)" = the shape's mIoU, count 1).
        Last come rows with category "(provenance)": part = a field (method,
        convention, teachers, partseg_version, workspace), value = its value.
        """
        buf = io.StringIO()
        writer = _PaddedWriter(buf)
        writer.writerow(CSV_HEADER)
        for d, s in self.domains.items():
            for c in self.categories:
                if c not in s.part_iou:
                    continue
                for n, v, k in zip(self.part_names[c], s.part_iou[c], s.part_count[c],
                                   strict=True):
                    writer.writerow([c, n, d, _cell(v), k])
                writer.writerow([c, MEAN, d, _cell(s.category_miou[c]), s.n_shapes[c]])
            scored = [v for v in s.category_miou.values() if not math.isnan(v)]
            writer.writerow([OVERALL, MEAN, d, _cell(s.overall_miou), len(scored)])
        for domain, table in (("ap50_part_aware", self.ap50_part_aware),
                              ("ap50_part_agnostic", self.ap50_part_agnostic)):
            if table is None:
                continue
            for c in self.categories:
                if c not in table:  # no shape of this category had instances
                    continue
                if domain == "ap50_part_aware":
                    for n in self.part_names[c]:
                        writer.writerow([c, n, domain, _cell(table.get(f"{c}/{n}", math.nan)),
                                         self.gt_instance_counts.get(f"{c}/{n}", 0)])
                writer.writerow([c, MEAN, domain, _cell(table.get(c, math.nan)),
                                 self.gt_instance_counts.get(c, 0)])
            scored = [c for c in self.categories if not math.isnan(table.get(c, math.nan))]
            writer.writerow([OVERALL, MEAN, domain, _cell(table["mean"]), len(scored)])
        summaries = [*((f"teacher_2d_{w}", t) for w, t in (self.teacher_2d or {}).items()),
                     *((f"teacher_box_{n}", t) for n, t in (self.teacher_boxes or {}).items())]
        for domain, table in summaries:
            for c in self.categories:
                writer.writerow([c, MEAN, domain, _cell(table.get(c, math.nan)),
                                 self.n_shapes[c]])
            scored = [c for c in self.categories if not math.isnan(table.get(c, math.nan))]
            writer.writerow([OVERALL, MEAN, domain, _cell(table["mean"]), len(scored)])
        for row in self.shapes:  # per shape: its parts' IoU and its mIoU, per domain
            for domain in ("points", "faces"):
                if domain in row:
                    for part, value in row[domain]["part_iou"].items():
                        writer.writerow([row["category"], part, domain,
                                         _cell(_nan(value)), 1, row["shape_id"]])
                    writer.writerow([row["category"], MEAN, domain,
                                     _cell(_nan(row[domain]["miou"])), 1, row["shape_id"]])
        for name, value in self.provenance.items():  # where every number above comes from
            writer.writerow([PROVENANCE, name, "", json.dumps(value) if not isinstance(
                value, str) else value, "", ""])
        return buf.getvalue()


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100.0 * value:.1f}"


def _num(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def _wrap(title: str, cells: list[str], width: int = 100) -> list[str]:
    lines, line = [], f"  {title}:"
    for c in cells:
        if len(line) + len(c) + 3 > width:
            lines.append(line)
            line = " " * (len(title) + 3)
        line += f"  {c}"
    lines.append(line)
    return lines


def _nanmean(values) -> float:
    arr = np.asarray(values, np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


# --- evaluation ---------------------------------------------------------------------------


def _check(item: ShapeEval) -> None:
    """Raise PartsegError naming the shape when its arrays disagree in length or range."""
    n_parts = len(item.part_names)
    pairs = [("pred_points", item.pred_points, "gt_points", item.gt_points)]
    if item.has_faces:
        pairs.append(("pred_faces", item.pred_faces, "gt_faces", item.gt_faces))
        if item.face_areas is not None:
            pairs.append(("face_areas", item.face_areas, "gt_faces", item.gt_faces))
    elif (item.gt_faces is None) != (item.pred_faces is None):
        raise PartsegError(f"shape {item.shape_id}: face labels given for only one of "
                           "ground truth and prediction")
    if item.has_instances:
        pairs += [("gt_instances", item.gt_instances, "gt_points", item.gt_points),
                  ("pred_instances", item.pred_instances, "gt_points", item.gt_points)]
    for a_name, a, b_name, b in pairs:
        if np.asarray(a).shape != np.asarray(b).shape:
            raise PartsegError(f"shape {item.shape_id}: {a_name} has shape "
                               f"{np.asarray(a).shape} but {b_name} has {np.asarray(b).shape}")
    labels = [("gt_points", item.gt_points), ("pred_points", item.pred_points)]
    if item.has_faces:
        labels += [("gt_faces", item.gt_faces), ("pred_faces", item.pred_faces)]
    for name, arr in labels:
        arr = np.asarray(arr)
        if arr.size and (arr.min() < -1 or arr.max() >= n_parts):
            raise PartsegError(f"shape {item.shape_id}: {name} has labels outside "
                               f"[-1, {n_parts}) for {n_parts} parts {item.part_names}")


def _domain_scores(items: list[ShapeEval], categories: list[str], n_parts: dict[str, int],
                   convention: str, domain: str) -> DomainScores:
    per_cat: dict[str, list[np.ndarray]] = {c: [] for c in categories}
    gt_has: dict[str, list[np.ndarray]] = {c: [] for c in categories}
    for item in items:
        n = n_parts[item.category]
        if domain == "points":
            pred, gt, weights = item.pred_points, item.gt_points, None
        else:
            pred, gt, weights = item.pred_faces, item.gt_faces, item.face_areas
        per_cat[item.category].append(part_ious(pred, gt, n, weights))
        gt = np.asarray(gt).ravel()
        gt_has[item.category].append(np.bincount(gt[gt >= 0], minlength=n) > 0)
    part_iou, part_count, category_miou, n_shapes = {}, {}, {}, {}
    shape_mious = []
    for c, rows in per_cat.items():
        if not rows:
            continue
        ious = np.stack(rows)  # (S, P), NaN where the part is absent from pred and gt
        if convention == "shapenetpart":
            ious = np.where(np.isnan(ious), 1.0, ious)
            shape_miou = ious.mean(axis=1)
            shape_mious.append(shape_miou)
            category_miou[c] = float(shape_miou.mean())
            part_iou[c] = ious.mean(axis=0).tolist()
            part_count[c] = [len(rows)] * ious.shape[1]
        else:
            # partnete: a part counts for a shape only when the shape's ground truth has it;
            # part_ious gives a number for every part present in gt or pred, so mask on gt.
            present = np.stack(gt_has[c])  # (S, P) part in the shape's ground truth
            masked = np.where(present, ious, np.nan)
            counts = present.sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(counts > 0, np.nansum(masked, axis=0) / counts, np.nan)
            part_iou[c] = means.tolist()
            part_count[c] = counts.astype(int).tolist()
            category_miou[c] = _nanmean(means)
        n_shapes[c] = len(rows)
    instance = float(np.concatenate(shape_mious).mean()) if shape_mious else math.nan
    return DomainScores(part_iou, part_count, category_miou, n_shapes,
                        _nanmean(list(category_miou.values())), instance)


def _categories(items: list[ShapeEval]) -> tuple[list[str], dict[str, list[str]]]:
    """Categories in first-seen order and their part names (must agree within a category)."""
    names: dict[str, list[str]] = {}
    for item in items:
        known = names.setdefault(item.category, list(item.part_names))
        if known != list(item.part_names):
            raise PartsegError(f"shape {item.shape_id}: part names {item.part_names} differ "
                               f"from {known} used by other {item.category!r} shapes")
    return list(names), names


class _PaddedWriter:
    """A csv writer whose rows all have CSV_HEADER's width (summary rows name no shape)."""

    def __init__(self, buf: io.StringIO):
        self._writer = csv.writer(buf, lineterminator="\n")

    def writerow(self, row: list) -> None:
        self._writer.writerow(list(row) + [""] * (len(CSV_HEADER) - len(row)))


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def shape_rows(items: list[ShapeEval], convention: str) -> list[dict]:
    """One JSON-ready row per shape: shape_id, category, and per domain ("points",
    "faces" when scored) its mIoU and per-part IoU (null where undefined). The shape's
    mIoU follows the convention: "shapenetpart" counts a part absent from both
    prediction and ground truth as 1; "partnete" averages the parts its ground truth has.
    """
    rows = []
    for item in items:
        n = len(item.part_names)
        row: dict = {"shape_id": item.shape_id, "category": item.category}
        domains = [("points", item.pred_points, item.gt_points, None)]
        if item.has_faces:
            domains.append(("faces", item.pred_faces, item.gt_faces, item.face_areas))
        for domain, pred, gt, weights in domains:
            ious = part_ious(pred, gt, n, weights)
            if convention == "shapenetpart":
                ious = np.where(np.isnan(ious), 1.0, ious)
                miou = float(ious.mean()) if n else math.nan
            else:
                labels = np.asarray(gt).ravel()
                present = np.bincount(labels[labels >= 0], minlength=n) > 0
                ious = np.where(present, ious, np.nan)
                miou = _nanmean(ious[present])
            row[domain] = {"miou": _num(miou), "part_iou": {
                name: _num(float(v)) for name, v in zip(item.part_names, ious, strict=True)}}
        rows.append(row)
    return rows


def resolve_method(workspace: Workspace, shape_ids: list[str], method: str) -> str:
    """The stored labelling ``method`` names: itself when stored, else the one stored
    labelling named ``<stage>.<method>`` (`distill --output NAME` stores distill.NAME).
    Raises PartsegError listing the labellings stored (as `partseg inspect` shows them)."""
    from .show import labelling_stages

    stored: list[str] = []
    for sid in shape_ids:
        for name in labelling_stages(workspace, sid):
            if name == method:
                return method
            if name not in stored:
                stored.append(name)
    matches = [name for name in stored if name.split(".", 1)[-1] == method]
    if len(matches) == 1:
        return matches[0]
    if not stored:
        from .pipeline import STAGE_VERSIONS

        if method.split(".")[0] in STAGE_VERSIONS:
            return method  # each shape then says which command computes it
        raise PartsegError(f"{workspace.root}: no labelling stored yet; run `partseg vote "
                           f"{workspace.root}` (or distill / adapt) first")
    raise PartsegError(f"no labelling {method!r} in {workspace.root}; stored: "
                       f"{', '.join(stored)} (`partseg inspect {workspace.root}` lists them)")


def evaluate(items: list[ShapeEval], convention: str = "shapenetpart") -> EvalReport:
    """Score shapes under ``convention`` ("shapenetpart" or "partnete"; see module doc).

    Points are always scored, faces when any item has both gt_faces and pred_faces (over
    those items), mAP50 part-aware and part-agnostic when any item has instances (over
    those items). Raises PartsegError on an unknown convention, no items, inconsistent part
    names within a category, or arrays of mismatched length (naming the shape).
    """
    if convention not in CONVENTIONS:
        raise PartsegError(f"unknown evaluation convention {convention!r}; "
                           f"choose one of {', '.join(CONVENTIONS)}")
    if not items:
        raise PartsegError("nothing to evaluate: no shapes with both ground truth and "
                           "a prediction")
    for item in items:
        _check(item)
    categories, part_names = _categories(items)
    n_parts = {c: len(p) for c, p in part_names.items()}
    n_shapes = {c: sum(it.category == c for it in items) for c in categories}
    domains = {"points": _domain_scores(items, categories, n_parts, convention, "points")}
    with_faces = [it for it in items if it.has_faces]
    if with_faces:
        domains["faces"] = _domain_scores(with_faces, categories, n_parts, convention, "faces")
    report = EvalReport(convention, categories, part_names, n_shapes, domains)
    report.shapes = shape_rows(items, convention)
    with_instances = [it for it in items if it.has_instances]
    if with_instances:
        report.ap50_part_aware = instance_ap50(with_instances, part_aware=True)
        report.ap50_part_agnostic = instance_ap50(with_instances, part_aware=False)
        report.gt_instance_counts = _gt_instance_counts(with_instances)
        report.derived_instance_shapes = sum(it.gt_instances_derived for it in with_instances)
    return report


# --- instance mAP50 -----------------------------------------------------------------------


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """PartNet AP with 101-point interpolation.

    tp: (D,) bool per detection, scores: (D,) float, n_gt: ground-truth instances.
    Detections are sorted by descending score (stable); precision at recall threshold
    t in {0, 0.01, ..., 1} is the best precision at any recall >= t, with PartNet's
    (recall 0, precision 1) start point, so any class with ground truth gets at least
    1/101. Returns NaN when n_gt == 0 (class not evaluated), 0 when nothing was detected.
    """
    if n_gt == 0:
        return math.nan
    if len(tp) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    hits = np.asarray(tp, bool)[order]
    tp_cum = np.cumsum(hits)
    fp_cum = np.cumsum(~hits)
    recall = np.concatenate([[0.0], tp_cum / n_gt])
    precision = np.concatenate([[1.0], tp_cum / (tp_cum + fp_cum)])
    # Best precision at recall >= t: a suffix maximum read at the first recall >= t
    # (recall is non-decreasing).
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, _RECALL_THRESHOLDS, side="left")
    reached = first < len(recall)
    sampled = np.where(reached, envelope[np.minimum(first, len(recall) - 1)], 0.0)
    return float(sampled.mean())


def _instances(item: ShapeEval) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                         np.ndarray]:
    """Instance IoUs of one shape after dropping gt "other"/unlabelled points.

    Returns iou (I, J) float64 between predicted and gt instances, pred_label (I,) int,
    pred_score (I,) float, gt_label (J,) int (majority gt part of each gt instance),
    pred_ok (I,) bool (prediction has a valid part label).
    """
    n_parts = len(item.part_names)
    gt = np.asarray(item.gt_points).ravel()
    gt_inst = np.asarray(item.gt_instances).ravel()
    pred_inst = np.asarray(item.pred_instances).ravel()
    labelled = gt >= 0
    # "other" points can take any label in the reference, so they leave the predictions too.
    g_sel = labelled & (gt_inst >= 0)
    gt_ids, g_idx = np.unique(gt_inst[g_sel], return_inverse=True)
    n_gt = len(gt_ids)
    gt_label = np.bincount(g_idx * n_parts + gt[g_sel], minlength=n_gt * n_parts
                           ).reshape(n_gt, n_parts).argmax(axis=1)
    gt_size = np.bincount(g_idx, minlength=n_gt)

    n_pred = _n_pred_instances(item)
    if pred_inst.size and pred_inst.max() >= n_pred:
        raise PartsegError(f"shape {item.shape_id}: pred_instances uses id "
                           f"{int(pred_inst.max())} but only {n_pred} instance labels/scores")
    p_sel = labelled & (pred_inst >= 0)
    pred_size = np.bincount(pred_inst[p_sel], minlength=n_pred)
    gt_of_point = np.full(gt.shape, -1, np.int64)
    gt_of_point[g_sel] = g_idx
    both = p_sel & (gt_of_point >= 0)
    inter = np.bincount(pred_inst[both] * n_gt + gt_of_point[both],
                        minlength=n_pred * n_gt).reshape(n_pred, n_gt)
    union = pred_size[:, None] + gt_size[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)

    if item.pred_instance_labels is not None:
        pred_label = np.asarray(item.pred_instance_labels, np.int64).ravel()
    else:
        pl = np.asarray(item.pred_points).ravel()
        ok = (pred_inst >= 0) & (pl >= 0)
        votes = np.bincount(pred_inst[ok] * n_parts + pl[ok], minlength=n_pred * n_parts
                            ).reshape(n_pred, n_parts)
        pred_label = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), -1)
    scores = (np.ones(n_pred) if item.pred_instance_scores is None
              else np.asarray(item.pred_instance_scores, np.float64).ravel())
    if len(pred_label) != n_pred or len(scores) != n_pred:
        raise PartsegError(f"shape {item.shape_id}: {len(pred_label)} instance labels and "
                           f"{len(scores)} instance scores do not match")
    pred_ok = (pred_label >= 0) & (pred_label < n_parts)
    return iou, pred_label, scores, gt_label, pred_ok


def _n_pred_instances(item: ShapeEval) -> int:
    for arr in (item.pred_instance_labels, item.pred_instance_scores):
        if arr is not None:
            return len(arr)
    pred_inst = np.asarray(item.pred_instances)
    return int(pred_inst.max()) + 1 if pred_inst.size else 0


def _match(iou: np.ndarray, eligible: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """PartNet greedy matching: predictions by descending score take the unused eligible gt
    instance of highest IoU; a true positive needs IoU > 0.5. Returns (I,) bool."""
    tp = np.zeros(len(scores), bool)
    used = np.zeros(iou.shape[1], bool)
    for i in np.argsort(-scores, kind="stable"):  # loop over instances, not points
        cand = np.where(eligible[i] & ~used, iou[i], -1.0)
        if cand.size and cand.max() > AP_IOU_THRESHOLD:
            j = int(cand.argmax())
            used[j] = True
            tp[i] = True
    return tp


def instance_ap50(items: list[ShapeEval], part_aware: bool = True) -> dict[str, float]:
    """PartNet-style AP at IoU 0.5 (101-point interpolation) over shapes with instances.

    part_aware: per (category, part) class, predictions match only gt instances of their
    part; keys "Category/part" (AP per part), "Category" (mean over its parts with ground
    truth) and "mean" (mean over categories), as in PartSTAD. Part-agnostic: labels are
    ignored, one class per category; keys "Category" and "mean". Ground-truth points
    labelled -1 are removed from predictions before matching. Fractions; NaN = no gt.
    """
    classes: dict[str, tuple[list, list, int]] = {}
    categories: dict[str, list[str]] = {}
    for item in items:
        _check(item)
        iou, pred_label, scores, gt_label, pred_ok = _instances(item)
        c = item.category
        categories.setdefault(c, list(item.part_names))
        if part_aware:
            eligible = pred_label[:, None] == gt_label[None, :]
            keys = [f"{c}/{n}" for n in item.part_names]
        else:
            eligible = np.ones(iou.shape, bool)
            keys = [c] * len(item.part_names)
        tp = _match(iou, eligible & pred_ok[:, None], scores)
        for key in keys:
            classes.setdefault(key, ([], [], 0))
        for p, key in enumerate(keys):
            det = pred_ok & (pred_label == p)
            tps, scs, n_gt = classes[key]
            tps.append(tp[det])
            scs.append(scores[det])
            classes[key] = (tps, scs, n_gt + int((gt_label == p).sum()))
    ap = {key: average_precision(np.concatenate(t), np.concatenate(s), n)
          for key, (t, s, n) in classes.items()}
    result: dict[str, float] = {}
    for c, names in categories.items():
        if part_aware:
            per_part = {f"{c}/{n}": ap[f"{c}/{n}"] for n in names}
            result.update(per_part)
            result[c] = _nanmean(list(per_part.values()))
        else:
            result[c] = ap[c]
    result["mean"] = _nanmean([result[c] for c in categories])
    return result


def _gt_instance_counts(items: list[ShapeEval]) -> dict[str, int]:
    """Ground-truth instances per "Category/part" and per "Category" (after dropping -1)."""
    counts: dict[str, int] = {}
    for item in items:
        _, _, _, gt_label, _ = _instances(item)
        per_part = np.bincount(gt_label, minlength=len(item.part_names))
        for n, k in zip(item.part_names, per_part, strict=True):
            counts[f"{item.category}/{n}"] = counts.get(f"{item.category}/{n}", 0) + int(k)
        counts[item.category] = counts.get(item.category, 0) + len(gt_label)
    return counts


# --- the `partseg evaluate` stage ---------------------------------------------------------


def has_ground_truth(workspace: Workspace, shape_id: str) -> bool:
    """Whether the stored shape carries per-point ground-truth part labels."""
    scope = shape_scope(shape_id)
    info = workspace.info(scope, "shape")
    if info is None:
        return False
    if "arrays" in info:  # the writer's checksum list names every array: no data read
        return "point_labels" in info["arrays"]
    return "point_labels" in workspace.read(scope, "shape", names=["point_labels"]).arrays


def teacher_trained_on(workspace: Workspace, shape_id: str) -> bool:
    """Whether the stored teacher output comes from a trained teacher that learned from
    this shape (`train-teacher`): its scores would not be test figures."""
    scope = shape_scope(shape_id)
    if not workspace.exists(scope, "detect"):
        return False
    return bool(workspace.read(scope, "detect", names=[]).record_attrs.get("training_shape"))


def face_areas(mesh: Mesh) -> np.ndarray:
    """(F,) float64 triangle areas of ``mesh`` (normalised frame units squared)."""
    tri = mesh.vertices[mesh.faces].astype(np.float64)  # (F, 3, 3)
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def remap_labels(labels: np.ndarray, from_names: list[str], to_names: list[str],
                 where: str) -> np.ndarray:
    """Relabel part indices of ``from_names`` into ``to_names`` by name (-1 stays -1).

    A prediction naming a part the ground truth lacks is an error naming ``where``.
    """
    labels = np.asarray(labels, np.int64)
    if not from_names or list(from_names) == list(to_names):
        return labels
    missing = [n for n in from_names if n not in to_names]
    if missing:
        raise PartsegError(f"{where}: predicted parts {missing} are not among the ground "
                           f"truth's parts {to_names}")
    lut = np.array([to_names.index(n) for n in from_names] + [-1], np.int64)
    return lut[labels]  # index -1 picks the trailing -1


def _check_pred_path(pred: Path, n_shapes: int) -> None:
    """Refuse, once for the whole run, a ``--pred`` path that cannot serve these shapes."""
    if not pred.exists():
        raise InputError(pred, "no such file or folder")
    if not pred.is_dir() and n_shapes > 1:
        raise InputError(pred, f"one label file given for {n_shapes} shapes; pass a folder "
                               "of <shape_id>.npy/.txt or select one shape with --shape-id")


def _pred_file(pred: Path, shape_id: str) -> Path:
    """The label file ``--pred`` gives for ``shape_id``: ``pred`` itself, or
    ``<shape_id>.npy`` / ``.txt`` in the folder ``pred``."""
    if not pred.is_dir():
        return pred
    found = [pred / f"{shape_id}{ext}" for ext in (".npy", ".txt")]
    found = [p for p in found if p.is_file()]
    if not found:
        raise InputError(pred, f"no {shape_id}.npy or {shape_id}.txt in this folder")
    return found[0]


def read_pred(pred: Path, shape: Shape) -> Labelling:
    """``shape``'s labelling from ``--pred``: a `partseg export` folder (``pred`` or
    ``pred/<shape_id>``: point and face labels, matched by part name) or a label file.

    A label file of the wrong length is refused naming that file, not only the shape:
    with a folder of predictions the file is what the user has to find and fix."""
    from .export import read_exported_labels, read_label_file

    shape_id = shape.shape_id
    for folder in (pred / shape_id, pred) if pred.is_dir() else ():
        exported = read_exported_labels(folder)
        if exported is not None:
            labelling, files = exported, (folder / "point_labels.npy",
                                          folder / "face_labels.npy")
            break
    else:
        path = _pred_file(pred, shape_id)
        labelling, files = Labelling(point_labels=read_label_file(path)), (path, path)
    n_faces = len(shape.mesh.faces) if shape.mesh is not None else None
    for labels, n, what, path in ((labelling.point_labels, len(shape.points), "points",
                                   files[0]),
                                  (labelling.face_labels, n_faces, "faces", files[1])):
        if labels is not None and n is not None and len(labels) != n:
            raise InputError(path, f"{len(labels)} labels, but shape {shape_id} has {n} "
                                   f"{what}")
    return labelling


# Derived instances: same-part points this many median nearest-neighbour spacings apart
# are linked. Points sampled at random on a surface leave gaps: at 3 spacings every dev
# shape (bench/dev_shapes.py, 10k points) broke into 30-60 "instances", mostly specks of
# 2-30 points 3.0-4.0 spacings from their part, which capped recall and so mAP50 near
# 10% for every method; at 5 (and 6) each dev shape has exactly its built pieces.
INSTANCE_LINK = 5.0


def derived_instances(points: np.ndarray, labels: np.ndarray, link: float = INSTANCE_LINK
                      ) -> np.ndarray:
    """Ground-truth instances for data that gives only part labels: the connected regions
    of same-part points, two points linked when closer than ``link`` x the median
    nearest-neighbour spacing (so a chair's four legs, which touch only the seat, are
    four instances, and a back's slats joined by a rail are one).

    points (N, 3), labels (N,) int, -1 unlabelled. Returns (N,) int32 instance ids, -1
    on unlabelled points.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    labels = np.asarray(labels, np.int64)
    out = np.full(labels.shape, -1, np.int32)
    keep = np.flatnonzero(labels >= 0)
    if keep.size == 0:
        return out
    tree = cKDTree(np.asarray(points, np.float64)[keep])
    spacing, _ = tree.query(tree.data, k=2)
    radius = link * float(np.median(spacing[:, 1])) if keep.size > 1 else 0.0
    pairs = tree.query_pairs(radius, output_type="ndarray")
    pairs = pairs[labels[keep][pairs[:, 0]] == labels[keep][pairs[:, 1]]]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                       shape=(keep.size, keep.size))
    _, component = connected_components(graph, directed=False)
    out[keep] = component.astype(np.int32)
    return out


def shape_eval(shape: Shape, labelling: Labelling, derive_instances: bool = True
               ) -> ShapeEval:
    """The ShapeEval of a stored shape (with ground truth) and a method's labelling.

    Predicted part indices are matched to the ground truth's by name when the labelling
    lists its part names; faces are scored (area-weighted) when both the mesh and the
    labelling have face labels, instances when both have point instances.
    """
    if shape.point_labels is None:
        raise PartsegError(f"shape {shape.shape_id}: no ground-truth labels to score against")
    # a predicted part the ground truth does not name is scored as an absent part (module
    # docstring), not refused: a LabeledDB airplane loaded without its category's other
    # shapes lists only its own parts, and "engine" is then asked for but not in its list
    names = list(shape.part_names)
    names += [n for n in labelling.part_names or [] if n not in names]
    where = f"shape {shape.shape_id} ({labelling.method or 'prediction'})"
    item = ShapeEval(shape.shape_id, shape.category or "(uncategorised)", names,
                     np.asarray(shape.point_labels),
                     remap_labels(labelling.point_labels, labelling.part_names, names, where))
    mesh = shape.mesh
    if mesh is not None and mesh.face_labels is not None and labelling.face_labels is not None:
        item.gt_faces = np.asarray(mesh.face_labels)
        item.pred_faces = remap_labels(labelling.face_labels, labelling.part_names, names, where)
        item.face_areas = face_areas(mesh)
    if labelling.point_instances is not None:
        if shape.point_instances is not None:
            item.gt_instances = np.asarray(shape.point_instances)
        elif derive_instances:  # LabeledDB, ShapeNetPart, plain files: no instances
            item.gt_instances = derived_instances(shape.points, np.asarray(shape.point_labels))
            item.gt_instances_derived = True
        if item.gt_instances is not None:
            item.pred_instances = np.asarray(labelling.point_instances)
        if labelling.instance_scores is not None:
            item.pred_instance_scores = np.asarray(labelling.instance_scores)
    return item


def gt_label_images(shape: Shape, views: Views) -> np.ndarray:
    """(V, H, W) int32 ground-truth part per pixel, -1 background / unlabelled.

    Mesh renders use the face labels of the rendered faces (PartDistill projects face
    labels); point renders use the label of each pixel's point.
    """
    mesh = shape.mesh
    if views.pixel_face is not None and mesh is not None and mesh.face_labels is not None:
        index, labels = views.pixel_face, np.asarray(mesh.face_labels)
    else:
        index, labels = views.pixel_point, np.asarray(shape.point_labels)
    return np.where(index >= 0, labels[np.maximum(index, 0)], -1).astype(np.int32)


def unit_regions(workspace: Workspace, shape_id: str, units: KnowledgeUnits,
                 views: Views) -> np.ndarray:
    """(K, H, W) bool 2D region s_i of every knowledge unit.

    Box units: the box minus background (``box_regions``) from the "detect" Boxes; mask
    units: the "sam-refine" mask; pixel-map units: the pixels showing the unit's points
    (the component itself is not stored; this is its lifted-and-reprojected version).
    """
    scope = shape_scope(shape_id)
    index = np.asarray(units.source_index, np.intp)
    if units.source == "boxes":
        boxes = workspace.read_record(scope, "detect", Boxes)
        return box_regions(boxes.xyxy[index], boxes.view[index], views.pixel_point >= 0)
    if units.source == "masks":
        return np.asarray(workspace.read_record(scope, "sam-refine", Masks).masks[index], bool)
    view = np.asarray(units.view, np.intp)
    regions = np.zeros((len(units), *views.pixel_point.shape[1:]), bool)
    for v in np.unique(view):  # per view, so only one (H, W) index map is live at a time
        sel = np.flatnonzero(view == v)
        pp = views.pixel_point[v]
        regions[sel] = units.masks[sel][:, np.maximum(pp, 0)] & (pp >= 0)
    return regions


def teacher_scores_2d(workspace: Workspace, shape: Shape
                      ) -> tuple[dict[str, float], BoxVerdicts | None]:
    """The teacher on one shape: its confidence-weighted mIoU2D {"before": x} plus
    {"after": y} when the "rescore" stage stored re-scored confidences, and its boxes'
    verdicts against the ground-truth part components (None for a pixel-map teacher)."""
    scope = shape_scope(shape.shape_id)
    views = workspace.read_record(scope, "render", Views)
    rescored = workspace.exists(scope, "rescore")
    if rescored:
        from .rescore import is_current

        if not is_current(workspace, shape.shape_id):
            raise PartsegError("its stored re-scores are stale (the knowledge units or the "
                               "labelling they came from changed since); rerun `partseg "
                               "rescore`")
    units = workspace.read_record(scope, "rescore" if rescored else "backproject",
                                  KnowledgeUnits)
    gt = gt_label_images(shape, views)
    regions = unit_regions(workspace, shape.shape_id, units, views)
    n_parts = len(shape.part_names)
    out = {"before": teacher_miou_2d(gt, regions, units.view, units.labels, units.confidence,
                                     n_parts)}
    if units.rescored_confidence is not None:
        out["after"] = teacher_miou_2d(gt, regions, units.view, units.labels,
                                       units.rescored_confidence, n_parts)
    verdicts = None
    if units.source in ("boxes", "masks"):  # both index the detect boxes
        boxes = workspace.read_record(scope, "detect", Boxes)
        verdicts = judge_boxes(gt, boxes.view, boxes.xyxy, boxes.labels, boxes.confidence,
                               n_parts, units.source_index, units.rescored_confidence)
    return out, verdicts


def run(workspace: Workspace, shape_ids: list[str], method: str = "vote",
        pred: Path | None = None, convention: str = "shapenetpart", teacher_2d: bool = False,
        derive_instances: bool = True) -> tuple[EvalReport, dict[str, str]]:
    """Score the stored labelling ``method`` (or label files ``pred``) of ``shape_ids``.

    pred: a .npy / one-integer-per-line file (one shape) or a folder of <shape_id>.npy/.txt;
    its labels index the shape's own part names. teacher_2d: also the teacher's 2D mIoU
    (``teacher_scores_2d``), averaged per category and then over categories, and its box
    precision, recall and confidence AUROC (pooled over a category's boxes, then averaged
    over categories).
    Labellings marked ``training_shape`` (the method learned from that shape: PartSTAD's
    and BiPart's training shapes, a student's) are scored apart in ``report.training``,
    never among the test figures. derive_instances: shapes whose data gives no instances
    get mAP50 against `derived_instances` (False: no mAP50 for them).
    Returns the report and {shape_id: problem} for shapes that could not be scored.
    Raises PartsegError when no shape could be scored as a test shape.
    """
    if convention not in CONVENTIONS:
        raise PartsegError(f"unknown evaluation convention {convention!r}; "
                           f"choose one of {', '.join(CONVENTIONS)}")
    if pred is not None:
        _check_pred_path(pred, len(shape_ids))
    else:
        method = resolve_method(workspace, shape_ids, method)
    items, training, failed = [], {}, {}
    scores_2d: dict[str, dict[str, list[float]]] = {}
    verdicts: dict[str, list[BoxVerdicts]] = {}
    seen_in_training = [sid for sid in shape_ids if teacher_trained_on(workspace, sid)]
    if seen_in_training:  # a teacher's training shapes are never scored as test shapes
        if len(seen_in_training) == len(shape_ids):
            raise PartsegError("every selected shape is a training shape of the teacher "
                               "(train-teacher); score shapes it did not learn from")
        more = ", ..." if len(seen_in_training) > 4 else ""
        warnings.warn(f"not scoring {len(seen_in_training)} shape(s) the teacher was trained "
                      f"on ({', '.join(seen_in_training[:4])}{more})", stacklevel=2)
        shape_ids = [sid for sid in shape_ids if sid not in set(seen_in_training)]
    for shape_id in shape_ids:
        scope = shape_scope(shape_id)
        try:
            shape = workspace.read_record(scope, "shape", Shape)
            if pred is not None:
                labelling = read_pred(pred, shape)
            else:
                labelling = workspace.read_record(scope, method, Labelling)
            item = shape_eval(shape, labelling, derive_instances)
            _check(item)
            if labelling.training_shape:
                training[shape_id] = item
                continue
            if teacher_2d:
                scores, judged = teacher_scores_2d(workspace, shape)
                for when, value in scores.items():
                    scores_2d.setdefault(when, {}).setdefault(item.category, []).append(value)
                if judged is not None:
                    verdicts.setdefault(item.category, []).append(judged)
            items.append(item)
        except PartsegError as exc:  # StoreError / InputError included: skip that shape
            failed[shape_id] = str(exc)
    problems = "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:3])
    if not items and training:
        raise PartsegError(f"every scored shape is a training shape of '{method}' "
                           f"({len(training)}: the method learned from them); score shapes "
                           "it did not train on" + (f" (not scored: {problems})" if failed
                                                    else ""))
    if not items:
        raise PartsegError(f"no shape could be scored ({problems})")
    report = evaluate(items, convention)
    if training:
        report.training = evaluate(list(training.values()), convention)
        report.training_ids = list(training)
    if teacher_2d:
        report.teacher_2d = {when: _category_means(per_cat) for when, per_cat in
                             scores_2d.items()}
        if verdicts:
            pooled = {c: pooled_box_scores(v) for c, v in verdicts.items()}
            report.teacher_boxes = {
                name: _category_means({c: [p[name]] for c, p in pooled.items()})
                for name in BOX_SCORES if name != "auroc_after"
                or any(not math.isnan(p[name]) for p in pooled.values())}
    _add_provenance(workspace, report, method if pred is None else None, pred)
    return report, failed


# Bump when the scores or the table `run_table` stores change: stored tables are then
# recomputed instead of printed again.
TABLE_VERSION = 1


def run_table(workspace: Workspace, shape_ids: list[str], method: str) -> str:
    """The evaluation table `partseg run` prints for ``method`` over ``shape_ids``,
    stored (collections/run/evaluation.<method>) under a key of every shape's and
    labelling's key: a cached run prints it again without reading an array or
    importing zarr. No derived instances (see `run`): a cached run must not need scipy."""
    from .store import collection_scope, content_key

    inputs = [f"{sid}:{workspace.key(shape_scope(sid), 'shape')}:"
              f"{workspace.key(shape_scope(sid), method)}" for sid in shape_ids]
    key = content_key("evaluate", TABLE_VERSION,
                      {"method": method, "convention": "shapenetpart"}, inputs)
    scope, stage = collection_scope("run"), f"evaluation.{method}"
    if workspace.cached_key(scope, stage) == key:
        return workspace.read(scope, stage, names=[]).record_attrs["table"]
    report, _ = run(workspace, shape_ids, method, None, "shapenetpart",
                    derive_instances=False)
    table = report.table()
    workspace.write(scope, stage, {"table": table}, key=key)
    return table


def _add_provenance(workspace: Workspace, report: EvalReport, method: str | None,
                    pred: Path | None) -> None:
    """What the numbers come from: the report's method, convention, teachers, partseg
    version and workspace; per shape row the keys of its shape, teacher output and
    labelling (the same keys `partseg inspect` shows)."""
    from . import __version__

    teachers: list[str] = []
    for row in report.shapes:
        scope = shape_scope(row["shape_id"])
        row["keys"] = {stage: workspace.key(scope, stage)
                       for stage in ("shape", "detect", *([method] if method else []))}
        if workspace.exists(scope, "detect"):
            row["teacher"] = workspace.read(scope, "detect", names=[]).record_attrs.get(
                "teacher", "")
            if row["teacher"] not in teachers:
                teachers.append(row["teacher"])
    report.provenance = {"method": method if method else f"--pred {pred}",
                         "convention": report.convention, "teachers": teachers,
                         "partseg_version": __version__, "workspace": str(workspace.root)}


def _category_means(per_category: dict[str, list[float]]) -> dict[str, float]:
    means = {c: _nanmean(v) for c, v in per_category.items()}
    means["mean"] = _nanmean(list(means.values()))
    return means

"""How good and how honest a 2D teacher is: pure functions on its outputs and the ground truth.

One home for the teacher metrics that `evaluate --teacher-2d` reports and the benchmarks
(bench/bench_teacher.py, bench/bench_trained_teacher.py) print:

- 2D mIoU: PartDistill's confidence-weighted mIoU of box / mask regions (supplementary
  Eq. A-D; ``box_regions``, ``teacher_miou_2d``), before and after re-scoring.
- box precision and recall against the ground-truth part components (the connected
  regions of each part's pixels in a view; a box is right at IoU >= 0.5 with a component
  of its own part): ``part_components``, ``match_boxes``, pooled by ``pooled_box_scores``.
- the AUROC of confidence for right vs wrong boxes (0.5 uninformative, 1 an oracle).
- box purity (the share of a box's labelled pixels that carry its label) and the
  cross-validated R^2 of predicting it from the box features (``cv_r2``): a leak detector
  for simulated teachers, whose features must not encode the ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .records import Boxes


def box_regions(xyxy: np.ndarray, view: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Box rectangles with background removed: F(b) of PartDistill supplementary, Sec. B.

    xyxy: (K, 4) float pixels (origin at the top-left pixel corner); view: (K,) int;
    foreground: (V, H, W) bool (e.g. ``pixel_point >= 0``). A pixel is inside a box when
    its centre is (edges inclusive), the rule backproject uses for lifting boxes.
    Returns (K, H, W) bool.
    """
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    _, height, width = foreground.shape
    cx = np.arange(width) + 0.5
    cy = np.arange(height) + 0.5
    in_x = (cx[None, :] >= xyxy[:, 0:1]) & (cx[None, :] <= xyxy[:, 2:3])  # (K, W)
    in_y = (cy[None, :] >= xyxy[:, 1:2]) & (cy[None, :] <= xyxy[:, 3:4])  # (K, H)
    return in_y[:, :, None] & in_x[:, None, :] & foreground[np.asarray(view, np.intp)]


def teacher_miou_2d(gt_labels: np.ndarray, masks: np.ndarray, view: np.ndarray,
                    label: np.ndarray, confidence: np.ndarray, n_parts: int) -> float:
    """Confidence-weighted 2D mIoU of a teacher (PartDistill supplementary Eq. A-D).

    gt_labels: (V, H, W) int, -1 background. masks: (K, H, W) bool prediction regions s_i
    (for box teachers use ``box_regions``); view, label: (K,) int; confidence: (K,) float.
    Per view v and part r, with phi(r) the masks of part r in v:
    I = sum_i C_i |s_i & G_r|, lambda = mean_i C_i |U s_i \\ G_r|, gamma = |G_r \\ U s_i|,
    IoU = I / (I + lambda + gamma). Pairs (v, r) count when r is in v's ground truth or
    predicted in v; a pair with zero denominator (nothing in G_r and no weighted
    prediction) is skipped. Returns the mean over pairs in [0, 1], NaN if there are none.
    """
    gt_labels = np.asarray(gt_labels)
    masks = np.asarray(masks, bool)
    view = np.asarray(view, np.int64).ravel()
    label = np.asarray(label, np.int64).ravel()
    confidence = np.asarray(confidence, np.float64).ravel()
    n_masks = masks.shape[0]
    if masks.shape[1:] != gt_labels.shape[1:]:
        raise ValueError(f"masks {masks.shape} and gt_labels {gt_labels.shape} differ in size")
    if not len(view) == len(label) == len(confidence) == n_masks:
        raise ValueError("view, label and confidence need one entry per mask")
    if n_masks and (label.min() < 0 or label.max() >= n_parts):
        raise ValueError(f"mask labels outside [0, {n_parts})")
    if n_masks and (view.min() < 0 or view.max() >= gt_labels.shape[0]):
        raise ValueError(f"mask views outside [0, {gt_labels.shape[0]})")
    ious: list[np.ndarray] = []
    for v in range(gt_labels.shape[0]):  # one vectorised pass per view
        gt_v = gt_labels[v].ravel()
        gt_size = np.bincount(gt_v[(gt_v >= 0) & (gt_v < n_parts)], minlength=n_parts)
        sel = np.flatnonzero(view == v)
        sel = sel[np.argsort(label[sel], kind="stable")]  # group masks by part for reduceat
        lab, conf = label[sel], confidence[sel]
        parts, starts = np.unique(lab, return_index=True)
        predicted = np.zeros(n_parts, bool)
        predicted[parts] = True
        if sel.size:
            m = masks[sel].reshape(len(sel), -1)
            inter = np.count_nonzero(m & (gt_v[None, :] == lab[:, None]), axis=1)
            union = np.logical_or.reduceat(m, starts, axis=0)  # (R, HW) U s_i per part
            union_size = np.count_nonzero(union, axis=1)
            union_in_gt = np.count_nonzero(union & (gt_v[None, :] == parts[:, None]), axis=1)
            weighted = np.add.reduceat(conf * inter, starts)
            mean_conf = np.add.reduceat(conf, starts) / np.diff(np.append(starts, len(sel)))
            lam = mean_conf * (union_size - union_in_gt)
            gamma = gt_size[parts] - union_in_gt
            denom = weighted + lam + gamma
            ious.append(weighted[denom > 0] / denom[denom > 0])
        # Parts in the ground truth with no prediction: I = lambda = 0, so IoU = 0.
        ious.append(np.zeros(int(((gt_size > 0) & ~predicted).sum())))
    all_ious = np.concatenate(ious) if ious else np.zeros(0)
    return float(all_ious.mean()) if all_ious.size else math.nan


BOX_MATCH_IOU = 0.5  # a box is right when it overlaps a same-part component this much
MIN_COMPONENT_FRACTION = 0.002  # components smaller than this share of a view's labelled
#                                 pixels are not targets (a few stray pixels of a part)
COMPONENT_GAP = 0.004  # same-part pixels this close (fraction of the image side) are one
#                        component: bridges the holes between splatted points


def part_components(gt_labels: np.ndarray, n_parts: int, gap: float = COMPONENT_GAP
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ground-truth part components of label images, the targets of box precision/recall.

    gt_labels: (V, H, W) int, -1 background. Per view and part, the 8-connected components
    of the part's pixels after closing gaps of ``gap`` x image side (closing bridges only
    background: the component box is that of its own pixels).
    Returns view (C,) int64, part (C,) int64, xyxy (C, 4) float64 pixel corners and
    share (C,) float64 of the view's labelled pixels that the component holds.
    """
    from scipy import ndimage

    gt_labels = np.asarray(gt_labels)
    n_views, height, width = gt_labels.shape
    radius = int(round(gap * max(height, width)))
    r = np.arange(-radius, radius + 1)
    disk = (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2
    views, parts, boxes, shares = [], [], [], []
    for v in range(n_views):
        labelled = max(int(np.count_nonzero(gt_labels[v] >= 0)), 1)
        for p in range(n_parts):
            mask = gt_labels[v] == p
            if not mask.any():
                continue
            closed = ndimage.binary_dilation(mask, disk) if radius > 0 else mask
            lab, n = ndimage.label(closed, np.ones((3, 3), bool))
            own = np.where(mask, lab, 0)
            area = np.bincount(own.ravel(), minlength=n + 1)[1:]
            for c, sl in enumerate(ndimage.find_objects(own, n)):
                if sl is None:
                    continue
                views.append(v)
                parts.append(p)
                boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
                shares.append(area[c] / labelled)
    return (np.asarray(views, np.int64), np.asarray(parts, np.int64),
            np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(shares, np.float64))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) IoU of XYXY boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-12)


def match_boxes(gt_labels: np.ndarray, view: np.ndarray, xyxy: np.ndarray,
                label: np.ndarray, n_parts: int, iou_threshold: float = BOX_MATCH_IOU,
                min_fraction: float = MIN_COMPONENT_FRACTION) -> tuple[np.ndarray, int, int]:
    """Which boxes are right, against the ground-truth part components (`part_components`).

    A box is right when some component of its own part in its view has IoU >= threshold
    with it (not one-to-one: duplicates of a right box are right too, so a box's verdict
    does not depend on the other boxes). Recall counts the components holding at least
    ``min_fraction`` of their view's labelled pixels (not a few stray pixels) that some box
    of their part matches. Returns right (B,) bool, the number of recalled components, the
    number of components counted for recall.
    """
    view = np.asarray(view, np.int64).ravel()
    label = np.asarray(label, np.int64).ravel()
    c_view, c_part, c_xyxy, c_share = part_components(gt_labels, n_parts)
    same = (view[:, None] == c_view[None]) & (label[:, None] == c_part[None])  # (B, C)
    hit = same & (box_iou(xyxy, c_xyxy) >= iou_threshold)
    counted = c_share >= min_fraction
    return hit.any(axis=1), int((hit.any(axis=0) & counted).sum()), int(counted.sum())


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` vs the rest (ties count
    half: the Mann-Whitney U statistic); NaN when either class is empty."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, np.float64).ravel()
    positive = np.asarray(positive, bool).ravel()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))

BOX_SCORES = ("precision", "recall", "auroc", "auroc_after")  # pooled_box_scores' keys
BOX_LABELS = {"precision": "box P", "recall": "box R", "auroc": "AUROC",
              "auroc_after": "AUROC after"}  # their column titles


@dataclass
class BoxVerdicts:
    """One shape's boxes judged against its ground truth (``judge_boxes``)."""

    right: np.ndarray  # (B,) bool: IoU >= BOX_MATCH_IOU with a component of its part
    confidence: np.ndarray  # (B,) float the teacher's own confidence
    recalled: int  # ground-truth components (counted for recall) some box matches
    counted: int  # ground-truth components counted for recall
    # after re-scoring, per knowledge unit: its box's verdict and its re-scored confidence
    unit_right: np.ndarray | None = None  # (K,) bool
    rescored: np.ndarray | None = None  # (K,) float


def judge_boxes(gt_labels: np.ndarray, view: np.ndarray, xyxy: np.ndarray, label: np.ndarray,
                confidence: np.ndarray, n_parts: int, unit_box: np.ndarray | None = None,
                rescored: np.ndarray | None = None) -> BoxVerdicts:
    """``match_boxes`` plus the confidences; with ``unit_box`` (K,) (the box of each
    knowledge unit) and ``rescored`` (K,), the verdicts of the re-scored units too."""
    right, recalled, counted = match_boxes(gt_labels, view, xyxy, label, n_parts)
    verdicts = BoxVerdicts(right, np.asarray(confidence, np.float64).ravel(), recalled, counted)
    if unit_box is not None and rescored is not None:
        verdicts.unit_right = right[np.asarray(unit_box, np.intp)]
        verdicts.rescored = np.asarray(rescored, np.float64).ravel()
    return verdicts


def pooled_box_scores(verdicts: list[BoxVerdicts]) -> dict[str, float]:
    """Box precision, recall and confidence AUROC pooled over the boxes of many shapes.

    Returns {"precision": right boxes / boxes, "recall": recalled / counted components,
    "auroc": of the teacher's confidence, "auroc_after": of the re-scored confidence over
    the re-scored units (NaN unless every shape was re-scored)}; NaN when undefined.
    """
    if not verdicts:
        return dict.fromkeys(BOX_SCORES, math.nan)
    right = np.concatenate([v.right for v in verdicts]).astype(bool)
    confidence = np.concatenate([v.confidence for v in verdicts])
    counted = sum(v.counted for v in verdicts)
    rescored = all(v.rescored is not None for v in verdicts)
    return {
        "precision": float(right.mean()) if right.size else math.nan,
        "recall": sum(v.recalled for v in verdicts) / counted if counted else math.nan,
        "auroc": auroc(confidence, right),
        "auroc_after": auroc(np.concatenate([v.rescored for v in verdicts]),
                             np.concatenate([v.unit_right for v in verdicts]))
        if rescored else math.nan,
    }


def box_purity(gt: np.ndarray, view: np.ndarray, xyxy: np.ndarray,
               labels: np.ndarray) -> np.ndarray:
    """(B,) fraction of the labelled pixels inside each box that carry the box's label (0
    for a box over no labelled pixel): the ground-truth quality of a box, which the
    simulated teacher's confidences and features must not see (except glip-like-leaky).

    gt: (V, H, W) int, -1 background; view (B,), xyxy (B, 4) pixels, labels (B,).
    Vectorised with one summed-area table per part.
    """
    gt = np.asarray(gt)
    v, h, w = gt.shape
    n_parts = int(max(gt.max(), np.max(labels, initial=-1))) + 1
    onehot = (gt[..., None] == np.arange(n_parts)).astype(np.int64)  # (V, H, W, P)
    table = np.zeros((v, h + 1, w + 1, n_parts + 1), np.int64)
    table[:, 1:, 1:, :n_parts] = onehot.cumsum(1).cumsum(2)
    table[:, 1:, 1:, n_parts] = (gt >= 0).cumsum(1).cumsum(2)
    sums = box_sums(table, np.asarray(view, np.intp), pixel_corners(xyxy, w, h))
    labelled = sums[:, n_parts]
    own = sums[np.arange(len(sums)), np.asarray(labels, np.intp)]
    return np.where(labelled > 0, own / np.maximum(labelled, 1), 0.0).astype(np.float32)


def pixel_corners(xyxy: np.ndarray, w: int, h: int) -> np.ndarray:
    """(B, 4) int pixel ranges x0, y0, x1, y1 (exclusive ends) covered by each box."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    lo = np.floor(xyxy[:, :2]).astype(np.intp)
    hi = np.ceil(xyxy[:, 2:]).astype(np.intp)
    lo = np.clip(lo, 0, [w, h])
    hi = np.clip(hi, lo, [w, h])
    return np.concatenate([lo, hi], axis=1)


def box_sums(table: np.ndarray, view: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(B, C) sums over each box of a summed-area table (V, H+1, W+1, C)."""
    x0, y0, x1, y1 = corners.T
    return (table[view, y1, x1] - table[view, y0, x1] - table[view, y1, x0]
            + table[view, y0, x0]).astype(np.float64)


def cv_r2(features: np.ndarray, target: np.ndarray, groups: np.ndarray, folds: int = 5,
          ridges: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)) -> float:
    """Cross-validated R^2 of a ridge regression, folds split by group (shape); the best
    over the ridge strengths, so a leak is not hidden by a badly chosen one."""
    return max(_cv_r2(features, target, groups, folds, r) for r in ridges)


def _cv_r2(features: np.ndarray, target: np.ndarray, groups: np.ndarray, folds: int,
           ridge: float) -> float:
    unique = np.unique(groups)
    if len(unique) < 2:
        return float("nan")
    fold_of = {g: i % min(folds, len(unique)) for i, g in enumerate(unique)}
    fold = np.array([fold_of[g] for g in groups])
    pred = np.zeros_like(target, dtype=np.float64)
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        mean, std = features[train].mean(0), features[train].std(0) + 1e-9
        offset = target[train].mean()  # the intercept, not penalised
        x = (features[train] - mean) / std
        w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ (target[train] - offset))
        # test features clipped to the training range: a ReLU unit nearly silent on the
        # training shapes (tiny std) would otherwise turn a test activation into a huge
        # standardised value and one wild prediction
        pred[test] = np.clip((features[test] - mean) / std, x.min(0), x.max(0)) @ w + offset
    total = np.sum((target - target.mean()) ** 2)
    return float(1.0 - np.sum((target - pred) ** 2) / max(total, 1e-12))


def purity_r2(gt_labels: list[np.ndarray], boxes: list[Boxes]) -> float:
    """Cross-validated R^2 of the purity of a teacher's boxes from their features, pooled
    over shapes (one fold group per shape, ``cv_r2``). gt_labels[i]: (V, H, W) int label
    images of shape i, boxes[i] its Boxes. Near 0: the features do not encode the truth."""
    purity = [box_purity(gt, b.view, b.xyxy, b.labels) for gt, b in zip(gt_labels, boxes,
                                                                        strict=True)]
    groups = [np.full(len(b), i) for i, b in enumerate(boxes)]
    return cv_r2(np.concatenate([b.features for b in boxes]).astype(np.float64),
                 np.concatenate(purity).astype(np.float64), np.concatenate(groups))

"""PartDistill student: forward distillation (Eq. 3) and backward distillation (Eq. 4).

A student (point encoder + 4-layer MLP head) is taught by the knowledge units that the
backproject stage lifted from the 2D teacher (records.KnowledgeUnits: label Y^d, point
mask M^d, confidence C^d). Two schedules, as in the paper:

- test-time alignment (`distill_tta`): one head per shape, trained on that shape's
  units only; the encoder is frozen, so its features are computed once per shape.
- pre-alignment (`distill_pre`): one student over a collection of unlabelled shapes,
  trained on a fixed schedule whose last state predicts every shape (no test labels
  are used for anything, and no checkpoint is selected on test data, unlike the
  released code). Few-shot: labelled shapes add a standard cross-entropy term.

Backward distillation: after each epoch the mean training loss is appended to a
history; once the change of its 5-epoch moving average falls below tau times the loss
scale (`backward_trigger`), every unit is re-scored by the agreement between the
student's argmax and its label over its mask (`rescore_units`, Eq. 4) and training
continues on the same units re-weighted by C_bd (`bd_confidence`). The paper puts C_bd
in place of C (`bd_weighting="replace"`); but a box's agreement is bounded by how much
of it its part fills, so raw C_bd starves thin parts (legs, armrests, handles) whose
right boxes agree little: on the procedural dev shapes (bench/dev_shapes.py) TTA fell
from 0.79 to 0.70 mIoU with it. The default scales C by C_bd relative to the mean C_bd
of the unit's part, so suppression is of units that agree less than their part's
others (mislabelled ones, with C_bd near 0, still drop out). The stored C_bd
(`DistillResult.rescored_confidence`) is always Eq. 4's.

Loss normalisation: the paper's Eq. 3 divides each unit's loss by its area and sums over
units (`normalise="eq3"`; "area" averages over units instead); the released code
(model/loss.py) divides each point's summed loss by the number of units covering it and
averages over points (`normalise="point"`, the default; dev evidence in the README).

Every deviation from the paper is a setting whose paper value is reachable from the CLI:
the relative plateau threshold (`tau_mode`, paper "absolute"), the forced BD start
(`bd_latest`, paper None), the part-relative BD weighting (`bd_weighting`, paper
"replace"), the cosine learning-rate decay (`lr_schedule`, paper "constant"; the
released code decays), the per-point normalisation (`normalise`, paper "eq3") and the
minimum steps per pre-alignment epoch (`steps_per_epoch`, reference 1). The orientation
alignment of pre-alignment (`align`, paper "none"; orientation.py) rotates every shape
onto a reference training shape by one of the 24 axis rotations before it is encoded,
for collections that are not oriented alike (the paper's ShapeNetPart is).

Frozen features are standardised per shape (`shape_standardise`) before the head, so a
pre-alignment head sees comparable features on every shape of the collection.

Frozen encoders see the un-augmented shape: re-encoding every step to augment would
cost far more than the whole head training. The reference augmentation (scale, shift,
jitter) is applied whenever the encoder is trained with the head.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError, PartsegError
from .orientation import ALIGN_MODES, Aligner, rotate
from .pipeline import (
    StageReport,
    collection_key,
    resolve_device,
    run_per_shape,
)
from .records import KnowledgeUnits, Labelling, Shape
from .store import Workspace, shape_scope
from .threads import single_threaded

if TYPE_CHECKING:  # torch is imported where a student is built: a cached run needs none
    import torch
    from torch import nn

    from .models.student import PointCloudLike, Student


@dataclass
class PointCloud:
    """A bare point cloud for callers without a records.Shape."""

    points: np.ndarray  # (N, 3) float32
    normals: np.ndarray  # (N, 3) float32, zeros where unknown
    colors: np.ndarray  # (N, 3) float32 in [0, 1]


@dataclass
class DistillConfig:
    """Student training settings; defaults follow the PartDistill paper and code."""

    mode: str = "tta"
    """'tta' (one head per shape, test-time alignment) or 'pre' (one student over the
    whole collection, pre-alignment)."""
    encoder: str = "pointnn"
    """Point encoder (encoders.ENCODERS): 'pointnn' (training-free, default) or
    'pointnet' (learnable, trained with the head unless a checkpoint is given)."""
    encoder_checkpoint: str | None = None
    """state_dict file for the encoder; a loaded encoder is frozen."""
    n_sample: int = 2048
    """Points sampled per shape per training step."""
    epochs: int = 25
    """Training epochs (fixed schedule; the last state is used)."""
    steps_per_epoch: int = 3
    """Steps per epoch: a TTA epoch is this many steps on its shape; a pre-alignment
    epoch is one pass over the shapes, but at least this many steps."""
    batch_size: int = 16
    """Pre-alignment: shapes per step."""
    lr: float = 1e-3
    """Adam learning rate (the paper's 0.001)."""
    lr_schedule: str = "cosine"
    """'cosine' (annealed to lr / 100 over the schedule, as the released code does) or
    'constant' (the paper states Adam at 0.001 and no decay)."""
    hidden: tuple[int, ...] = (128, 128, 64)
    """Hidden widths of the head (len + 1 linear layers, ReLU between)."""
    normalise: str = "point"
    """Loss normalisation (`distillation_loss`): 'point' (the released code: per point
    by the number of units covering it), 'eq3' (the paper's Eq. 3 as written: per unit by
    its area, summed over units) or 'area' (Eq. 3 averaged over units instead)."""
    class_weighting: bool = True
    """Weight each unit's loss by its class weight (`class_weights`)."""
    backward: bool = True
    """Run backward distillation (re-score units, Eq. 4) once the loss plateaus."""
    tau: float = 0.01
    """Plateau threshold on the change of the loss moving average (`backward_trigger`)."""
    tau_mode: str = "relative"
    """'relative' (the change relative to the first full moving average) or 'absolute'
    (the change itself, as the paper and released code compare it with tau)."""
    ma_window: int = 5
    """Epochs in the loss moving average."""
    bd_weighting: str = "part"
    """How C_bd weights the units after backward distillation (`bd_confidence`):
    'part' (C scaled by C_bd relative to its part's units; does not starve thin parts)
    or 'replace' (the paper's Eq. 3 with C_bd in place of C)."""
    bd_latest: float | None = 0.6
    """Start backward distillation by this fraction of the epochs at the latest, so
    re-scored units always get trained on; None (the paper): only when the loss
    plateaus."""
    scale_range: tuple[float, float] = (0.9, 1.1)
    """Augmentation (trainable encoders only): per-axis random scale."""
    shift: float = 0.1
    """Augmentation: random translation in [-shift, shift] per axis."""
    jitter_sigma: float = 0.01
    """Augmentation: per-point Gaussian jitter sigma."""
    jitter_clip: float = 0.02
    """Augmentation: jitter clipped to [-clip, clip]."""
    shape_standardise: bool = True
    """Standardise frozen features per shape (each channel to zero mean, unit variance
    over the shape's points) before the head's collection-wide standardisation, so one
    head sees comparable features across shapes (pre-alignment; for TTA the head's own
    standardisation already does this)."""
    feature_pool: int = 4096
    """Pre-alignment: points per shape whose frozen features are kept for training
    (float16); whole shapes are re-encoded for re-scoring and prediction."""
    feature_budget_mb: float = 1024.0
    """Pre-alignment: memory for the kept features of the whole collection; large
    collections keep fewer points per shape (`feature_pool_size`)."""
    feature_copies: int = 0
    """Pre-alignment with a frozen encoder: augmented copies (reference scale, shift,
    jitter) of each training shape, encoded once and trained on beside the shape, so
    the head cannot memorise the exact positions of a few shapes; an epoch visits every
    copy (steps and encoding grow (1 + copies) x). 0: the un-augmented shapes only."""
    align: str = "none"
    """Pre-alignment: 'none' (the paper: shapes are encoded as they are, PartDistill's
    ShapeNetPart being consistently oriented) or 'axes' (each training shape, few-shot
    shape and shape the student is applied to is first rotated by the one of the 24 axis
    rotations that registers it best to a reference training shape, orientation.py; the
    reference is kept with the student). TTA trains one head per shape and ignores it."""
    fewshot_weight: float = 1.0
    """Weight of the cross-entropy on labelled (few-shot) shapes."""
    seed: int = 0
    """Seed for initialisation, point sampling and augmentation."""
    device: str = "auto"
    """'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when present)."""


@dataclass
class DistillResult:
    """The student's segmentation of one shape."""

    point_probs: np.ndarray  # (N, P) float32, softmax of the student
    point_labels: np.ndarray  # (N,) int32 argmax part
    rescored_confidence: np.ndarray | None = None  # (K,) float32 C_bd, if BD ran
    loss_history: list[float] = field(default_factory=list)  # mean loss per epoch
    bd_epoch: int | None = None  # 0-based epoch after which BD ran
    bd_forced: bool = False  # BD started by `bd_latest`, not by a loss plateau
    no_units: bool = False  # the shape had no usable knowledge unit

    def to_labelling(self, part_names: list[str], method: str = "partdistill") -> Labelling:
        return Labelling(point_labels=self.point_labels, point_probs=self.point_probs,
                         part_names=list(part_names), method=method)


# --- the math ------------------------------------------------------------------------


def class_weights(units: KnowledgeUnits | Sequence[KnowledgeUnits], n_parts: int,
                  extra_labels: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Class-balance weights from the teacher's predictions (PartDistill code).

    count_r = number of (point, unit) pairs with unit label r and confidence > 0,
    summed over all given units, plus points labelled r in ``extra_labels`` (few-shot
    ground truth, -1 ignored). w_r = clip(1 + log4(sum_r' count_r' / (P * count_r)),
    1, 4): a part at the average frequency gets 1, a 64x rarer one 4, an absent part 4.
    Returns (P,) float32; all ones when nothing is counted.
    """
    unit_sets = [units] if isinstance(units, KnowledgeUnits) else list(units)
    counts = np.zeros(n_parts, np.float64)
    for u in unit_sets:
        if len(u) == 0:
            continue
        active = u.confidence > 0
        np.add.at(counts, u.labels[active], u.masks[active].sum(axis=1))
    for labels in extra_labels:
        labels = np.asarray(labels)
        counts += np.bincount(labels[labels >= 0], minlength=n_parts)[:n_parts]
    total = counts.sum()
    if total == 0:
        return np.ones(n_parts, np.float32)
    with np.errstate(divide="ignore"):
        inverse = total / (n_parts * counts)
    return np.clip(1.0 + np.log(inverse) / np.log(4.0), 1.0, 4.0).astype(np.float32)


NORMALISATIONS = ("point", "eq3", "area")
LR_SCHEDULES = ("cosine", "constant")
TAU_MODES = ("relative", "absolute")


def distillation_loss(logits: torch.Tensor, unit_masks: torch.Tensor, unit_labels: torch.Tensor,
                      unit_conf: torch.Tensor, class_w: torch.Tensor,
                      normalise: str = "point") -> torch.Tensor:
    """Masked, confidence-weighted cross-entropy of Eq. 3.

    logits: (S, P) student scores of S points; unit_masks: (K, S) bool, M^d restricted
    to those points; unit_labels: (K,) int64 Y^d; unit_conf: (K,) float C^d;
    class_w: (P,) float. With l_dn = w[Y^d] * C^d * -log softmax(logits_n)[Y^d] for
    n in M^d, and units with C^d = 0 or an empty mask inactive:

    - normalise="area" (paper Eq. 3): L = mean over active units d of
      (1 / |M^d|) * sum_{n in M^d} l_dn, |M^d| = points of the S the mask covers.
      (Eq. 3 sums over units; the mean keeps the scale independent of the unit count.)
    - normalise="eq3" (Eq. 3 as written): the same per-unit terms summed over the active
      units, so a shape's loss grows with its unit count.
    - normalise="point" (the released code, model/loss.py): L = mean over the S points
      of (1 / c_n) * sum_{d covering n} l_dn, c_n = number of active units covering n
      (at least 1), so every point counts once however many units cover it.

    Returns a scalar; a zero that still carries the graph when no unit is active.
    """
    import torch.nn.functional as F  # noqa: N812

    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {', '.join(NORMALISATIONS)}, "
                         f"not {normalise!r}")
    if unit_masks.shape[0] == 0:
        return logits.sum() * 0.0
    logp = F.log_softmax(logits, dim=-1)  # (S, P)
    nll = -logp[:, unit_labels].T  # (K, S): -log p_n(Y^d)
    mask = unit_masks.to(logp.dtype) * (unit_conf > 0)[:, None]
    area = mask.sum(dim=1)  # (K,)
    active = area > 0
    if not bool(active.any()):
        return logits.sum() * 0.0
    weighted = nll * mask * (class_w[unit_labels] * unit_conf)[:, None]  # (K, S)
    if normalise == "point":
        return (weighted.sum(dim=0) / mask.sum(dim=0).clamp(min=1.0)).mean()
    per_unit = weighted.sum(dim=1) / area.clamp(min=1.0)
    if normalise == "eq3":
        return per_unit[active].sum()
    return per_unit[active].sum() / active.sum()


def rescore_units(pred_labels: np.ndarray, units: KnowledgeUnits) -> np.ndarray:
    """Backward distillation re-scoring (Eq. 4).

    pred_labels: (N,) int student argmax per point. Returns (K,) float32
    C_bd^d = |{n in M^d : pred_n == Y^d}| / |M^d|, 0 for an empty mask.
    """
    if len(units) == 0:
        return np.zeros(0, np.float32)
    agree = units.masks & (np.asarray(pred_labels)[None, :] == units.labels[:, None])
    area = units.masks.sum(axis=1)
    return (agree.sum(axis=1) / np.maximum(area, 1)).astype(np.float32)


def bd_confidence(c_bd: np.ndarray, units: KnowledgeUnits, n_parts: int,
                  weighting: str = "part") -> np.ndarray:
    """Training weights of the units after backward distillation, from C_bd (Eq. 4).

    c_bd: (K,) re-scored confidences of ``units``. Returns (K,) float32:

    - weighting="replace" (paper Eq. 3 with C replaced by C_bd): C_bd itself.
    - weighting="part": C^d * min(1, C_bd^d / mean C_bd of the units of part Y^d), the
      mean weighted by each unit's area x C. A box's agreement is bounded by how much
      of it the part fills, which is low for thin parts (legs, arms, handles) even when
      the box is right; raw C_bd weights therefore starve small parts in favour of
      large ones (on the dev shapes an armrest IoU fell from 0.59 to 0.01). Relative to
      its part, a unit keeps its teacher confidence when it agrees as well as its
      part's units do on average, and is suppressed in proportion when it agrees less
      (a mislabelled unit, with C_bd near 0, still drops out).
    """
    c_bd = np.asarray(c_bd, np.float64)
    if weighting == "replace":
        return c_bd.astype(np.float32)
    if weighting != "part":
        raise ValueError(f"bd_weighting must be 'part' or 'replace', not {weighting!r}")
    if len(units) == 0:
        return np.zeros(0, np.float32)
    w = units.masks.sum(axis=1) * units.confidence.astype(np.float64)
    num = np.bincount(units.labels, weights=w * c_bd, minlength=n_parts)
    den = np.bincount(units.labels, weights=w, minlength=n_parts)
    ref = np.divide(num, den, out=np.zeros(n_parts), where=den > 0)[units.labels]
    rel = np.divide(c_bd, ref, out=np.zeros_like(c_bd), where=ref > 0)
    return (units.confidence * np.minimum(rel, 1.0)).astype(np.float32)


def backward_trigger(losses: Sequence[float], window: int = 5, tau: float = 0.01,
                     relative: bool = True) -> bool:
    """Whether the loss has plateaued after the last epoch of ``losses``.

    With m_e the mean of the ``window`` epoch losses ending at epoch e (0-based),
    triggers when |m_e - m_{e-1}| < tau * m_{window-1} (``relative``) or < tau (not
    relative: the paper and released code), from epoch ``window`` on (the first epoch
    where two full-window averages exist). The relative change follows the loss scale at
    the start: an absolute threshold depends on the loss scale (class weights, unit
    count, normalisation), and a change relative to the current average would never
    fire on a loss that decays geometrically towards 0.
    """
    if len(losses) < window + 1:
        return False
    now = float(np.mean(losses[-window:]))
    before = float(np.mean(losses[-window - 1:-1]))
    scale = abs(float(np.mean(losses[:window]))) if relative else 1.0
    return abs(now - before) <= tau * scale


def plateau_epoch(losses: Sequence[float], window: int = 5, tau: float = 0.01,
                  relative: bool = True) -> int | None:
    """First 0-based epoch after which `backward_trigger` fires on ``losses``, or None."""
    for e in range(len(losses)):
        if backward_trigger(losses[:e + 1], window, tau, relative):
            return e
    return None


def augment(points: torch.Tensor, config: DistillConfig,
            generator: torch.Generator) -> torch.Tensor:
    """Reference augmentation of points (N, 3): per-axis scale, shift, clipped jitter."""
    import torch

    dev, dt = points.device, points.dtype
    lo, hi = config.scale_range
    scale = lo + (hi - lo) * torch.rand(3, generator=generator, device=dev, dtype=dt)
    shift = config.shift * (2 * torch.rand(3, generator=generator, device=dev, dtype=dt) - 1)
    jitter = (config.jitter_sigma * torch.randn(points.shape, generator=generator, device=dev,
                                                dtype=dt)).clamp(-config.jitter_clip,
                                                                 config.jitter_clip)
    return points * scale + shift + jitter


def _augmented_copy(shape: PointCloudLike, config: DistillConfig,
                    generator: torch.Generator) -> PointCloud:
    """``shape`` with `augment`ed points (same order, so its units still apply)."""
    import torch

    points = augment(torch.as_tensor(np.asarray(shape.points, np.float32),
                                     device=generator.device), config, generator)
    return PointCloud(points.cpu().numpy(), np.asarray(shape.normals, np.float32),
                      np.asarray(shape.colors, np.float32))


def aligned(shape: PointCloudLike, aligner: Aligner | None) -> PointCloudLike:
    """``shape`` rotated onto ``aligner``'s reference (points and normals; same point
    order, so units and labels apply unchanged); ``shape`` itself without an aligner."""
    if aligner is None:
        return shape
    rotation = aligner.rotation(shape.points)
    return PointCloud(rotate(np.asarray(shape.points, np.float32), rotation),
                      rotate(np.asarray(shape.normals, np.float32), rotation),
                      np.asarray(shape.colors, np.float32))


def _check_units(units: KnowledgeUnits, n_points: int, n_parts: int) -> None:
    if len(units) and units.masks.shape != (len(units), n_points):
        raise InputError("knowledge units", f"masks have shape {units.masks.shape}, "
                         f"expected ({len(units)}, {n_points}) for this shape")
    if len(units) and (units.labels.min() < 0 or units.labels.max() >= n_parts):
        raise InputError("knowledge units", f"labels outside [0, {n_parts}) "
                         f"(found {units.labels.min()}..{units.labels.max()})")


def _usable(units: KnowledgeUnits) -> bool:
    return bool(len(units)) and bool(((units.confidence > 0) & units.masks.any(axis=1)).any())


@dataclass
class _Item:
    """One training shape on the device; masks and labels restricted to its pool."""

    shape: PointCloudLike
    units: KnowledgeUnits
    pool: np.ndarray  # (Q,) int64 point indices whose features are kept
    feats: torch.Tensor | None  # (Q, D) frozen features, None for trainable encoders
    masks: torch.Tensor  # (K, Q) bool, M^d on the pool
    labels: torch.Tensor  # (K,) int64
    conf: torch.Tensor  # (K,) float32, replaced by C_bd after backward distillation
    gt: torch.Tensor | None  # (Q,) int64 few-shot labels on the pool, -1 ignored
    rescored: np.ndarray | None = None
    graph: torch.Tensor | None = None  # (1, Q, k) kNN of the pool, for a graph encoder


def _make_item(student: Student, shape: PointCloudLike, units: KnowledgeUnits,
               gt: np.ndarray | None, pool_size: int, rng: np.random.Generator,
               half: bool, n_sample: int) -> _Item:
    import torch

    from .models.student import point_tensors

    dev = student.device
    n = len(shape.points)
    graph_encoder = student.encoder.trainable and hasattr(student.encoder, "neighbours")
    if graph_encoder:
        # As the reference: a fixed subset of n_sample points per shape, so its kNN
        # graph is built once (the augmentation moves points too little to change it).
        pool_size = min(pool_size, n_sample)
    pool = (np.arange(n) if n <= pool_size
            else np.sort(rng.choice(n, pool_size, replace=False)))
    feats = None
    if not student.encoder.trainable:
        with torch.no_grad():
            feats = student.encode(*point_tensors(shape, dev))[torch.as_tensor(pool, device=dev)]
        feats = feats.half() if half else feats
    graph = None
    if graph_encoder:
        pts = point_tensors(shape, dev)[0][torch.as_tensor(pool, device=dev)]
        graph = student.encoder.neighbours(pts[None])
    k = len(units)
    masks = (torch.as_tensor(units.masks[:, pool], device=dev) if k
             else torch.zeros(0, len(pool), dtype=torch.bool, device=dev))
    return _Item(shape, units, pool, feats, masks,
                 torch.as_tensor(units.labels, dtype=torch.long, device=dev).reshape(k),
                 torch.as_tensor(units.confidence, dtype=torch.float32, device=dev).reshape(k),
                 None if gt is None else torch.as_tensor(gt[pool], dtype=torch.long, device=dev),
                 graph=graph)


def _item_logits(student: Student, item: _Item, config: DistillConfig,
                 rng: np.random.Generator, gen: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (S, P) for S points sampled from the pool, and their pool positions (S,)."""
    import torch

    from .models.student import point_tensors

    if item.graph is not None:  # the whole fixed pool, with its cached graph
        pts, nrm, col = (t[torch.as_tensor(item.pool, device=student.device)]
                         for t in point_tensors(item.shape, student.device))
        feats = student.encoder(augment(pts, config, gen)[None], nrm[None], col[None],
                                neighbours=item.graph)[0]
        return student.head(feats), torch.arange(len(item.pool), device=student.device)
    pick = rng.choice(len(item.pool), min(config.n_sample, len(item.pool)), replace=False)
    pick_t = torch.as_tensor(pick, device=student.device)
    if item.feats is not None:
        return student.head(item.feats[pick_t]), pick_t
    idx = torch.as_tensor(item.pool[pick], device=student.device)
    pts, nrm, col = (t[idx] for t in point_tensors(item.shape, student.device))
    return student.head(student.encode(augment(pts, config, gen), nrm, col)), pick_t


def _item_probs(student: Student, item: _Item) -> np.ndarray:
    """(N, P) float32 probabilities of all the item's points; reuses kept features when
    they cover the whole shape."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    if item.feats is None or len(item.pool) < len(item.shape.points):
        return student.predict(item.shape)
    with torch.no_grad():
        student.eval()
        return F.softmax(student.head(item.feats), dim=-1).cpu().numpy().astype(np.float32)


def _train(student: Student, items: list[_Item], n_parts: int, class_w: np.ndarray,
           config: DistillConfig, steps_per_epoch: int, batch_size: int,
           rng: np.random.Generator, gen: torch.Generator) -> tuple[list[float], int | None, bool]:
    """The fixed training schedule with backward distillation; updates ``items``.

    Returns (mean loss per epoch, BD epoch or None, whether BD was forced).
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    total = max(1, config.epochs * steps_per_epoch)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, total, eta_min=config.lr / 100)
             if config.lr_schedule == "cosine" else None)
    cw = torch.as_tensor(class_w, device=student.device)
    latest = (None if config.bd_latest is None
              else max(0, math.ceil(config.bd_latest * config.epochs) - 1))
    losses: list[float] = []
    bd_epoch, bd_forced = None, False
    for epoch in range(config.epochs):
        student.train()
        order = rng.permutation(len(items))
        epoch_losses = []
        for step in range(steps_per_epoch):
            start = (step * batch_size) % len(items)
            batch = [items[i] for i in np.roll(order, -start)[:batch_size]]
            terms = []
            for item in batch:
                logits, pick = _item_logits(student, item, config, rng, gen)
                loss = distillation_loss(logits, item.masks[:, pick], item.labels, item.conf, cw,
                                         config.normalise)
                if item.gt is not None:
                    loss = loss + config.fewshot_weight * F.cross_entropy(
                        logits, item.gt[pick], ignore_index=-1)
                terms.append(loss)
            loss = torch.stack(terms).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            epoch_losses.append(float(loss.detach()))
        losses.append(float(np.mean(epoch_losses)))
        if config.backward and bd_epoch is None and epoch < config.epochs - 1:
            plateau = backward_trigger(losses, config.ma_window, config.tau,
                                       config.tau_mode == "relative")
            if plateau or (latest is not None and epoch >= latest):
                bd_epoch, bd_forced = epoch, not plateau
                for item in items:
                    if len(item.units):
                        pred = _item_probs(student, item).argmax(axis=1)
                        item.rescored = rescore_units(pred, item.units)
                        item.conf = torch.as_tensor(
                            bd_confidence(item.rescored, item.units, n_parts, config.bd_weighting),
                            device=student.device)
    return losses, bd_epoch, bd_forced


def _new_student(encoder: nn.Module, n_parts: int, config: DistillConfig,
                 device: str) -> Student:
    import torch
    from torch import nn

    from .models.student import Head, Student

    # A private RNG stream: initialisation depends on the seed only, and the caller's
    # global torch RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = Head(encoder.out_dim, n_parts, config.hidden)
        if encoder.trainable:
            for module in encoder.modules():
                if isinstance(module, nn.Linear):
                    module.reset_parameters()
    return Student(encoder, head, config.shape_standardise).to(device)


def _density_matched(encoder: nn.Module, config: DistillConfig) -> nn.Module:
    # A graph encoder labels a shape in passes of as many points as it trained on.
    if hasattr(encoder, "points_per_pass"):
        encoder.points_per_pass = config.n_sample
    return encoder


def check_config(config: DistillConfig) -> None:
    """One-line PartsegError for a setting outside its choices."""
    choices = {"normalise": NORMALISATIONS, "lr_schedule": LR_SCHEDULES,
               "tau_mode": TAU_MODES, "bd_weighting": ("part", "replace"),
               "mode": ("tta", "pre"), "align": ALIGN_MODES}
    for name, allowed in choices.items():
        value = getattr(config, name)
        if value not in allowed:
            raise PartsegError(f"--{name.replace('_', '-')}: choose {' or '.join(allowed)}, "
                               f"not {value!r}")
    if config.feature_copies < 0:
        raise PartsegError(f"--feature-copies: 0 or more, not {config.feature_copies}")
    if config.bd_latest is not None and not 0 < config.bd_latest <= 1:
        raise PartsegError(f"--bd-latest: a fraction of the epochs in (0, 1] or 'none', "
                           f"not {config.bd_latest}")


def _setup(config: DistillConfig) -> tuple[str, np.random.Generator, torch.Generator, nn.Module]:
    import torch

    from .encoders import build_encoder

    check_config(config)
    device = resolve_device(config.device)
    encoder = _density_matched(build_encoder(config.encoder, config.encoder_checkpoint, device),
                               config)
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)
    return device, np.random.default_rng(config.seed), gen, encoder


def _uniform(n_points: int, n_parts: int) -> DistillResult:
    probs = np.full((n_points, n_parts), 1.0 / n_parts, np.float32)
    return DistillResult(probs, np.zeros(n_points, np.int32), no_units=True)



def _result(probs: np.ndarray, item: _Item, losses: list[float], bd_epoch: int | None,
            forced: bool) -> DistillResult:
    return DistillResult(probs, probs.argmax(axis=1).astype(np.int32), item.rescored,
                         list(losses), bd_epoch, forced, not _usable(item.units))


def _set_normalisation(student: Student, items: list[_Item]) -> None:
    import torch

    if not student.encoder.trainable:
        student.head.set_normalisation(torch.cat([i.feats for i in items]))


@single_threaded
def distill_tta(shape: PointCloudLike, units: KnowledgeUnits, n_parts: int,
                config: DistillConfig) -> DistillResult:
    """Test-time alignment: train a head on one shape's units, label every point.

    shape: N points (N, 3) with normals and colours; units: K units over those N
    points; n_parts: P. Points no unit covers are labelled by the head too. A shape
    with no usable unit (none, or all with zero confidence / empty masks) gets uniform
    probabilities (labels 0) and a warning, and ``no_units`` set.
    """
    n = len(shape.points)
    _check_units(units, n, n_parts)
    if not _usable(units):
        warnings.warn("shape has no usable knowledge units: its labelling is uniform "
                      "(every point gets part 0)", stacklevel=2)
        return _uniform(n, n_parts)
    device, rng, gen, encoder = _setup(config)
    student = _new_student(encoder, n_parts, config, device)
    item = _make_item(student, shape, units, None, n, rng, half=False, n_sample=config.n_sample)
    _set_normalisation(student, [item])
    losses, bd_epoch, forced = _train(student, [item], n_parts,
                                      class_weights(units, n_parts) if config.class_weighting
                                      else np.ones(n_parts, np.float32),
                                      config, config.steps_per_epoch, 1, rng, gen)
    return _result(_item_probs(student, item), item, losses, bd_epoch, forced)


@dataclass
class TrainedStudent:
    """A pre-aligned student and what its training produced."""

    student: Student
    losses: list[float]  # mean loss per epoch
    bd_epoch: int | None  # 0-based epoch after which BD ran
    bd_forced: bool
    rescored: list[np.ndarray | None]  # per collection shape: C_bd (K,) when BD ran
    steps: int  # optimiser steps taken
    seconds: float  # wall time of encoding + training


def pre_steps_per_epoch(n_shapes: int, config: DistillConfig) -> int:
    """Optimiser steps in one pre-alignment epoch: every shape once, ``batch_size`` per
    step (the reference's epoch), but at least ``steps_per_epoch``."""
    batch = max(1, min(config.batch_size, n_shapes))
    return max(math.ceil(n_shapes / batch), config.steps_per_epoch)


def feature_pool_size(n_shapes: int, feature_dim: int, config: DistillConfig) -> int:
    """Points per shape whose frozen features are kept: ``feature_pool``, lowered so the
    kept float16 features of the whole collection fit ``feature_budget_mb`` (never below
    ``n_sample``, the points one step samples per shape)."""
    budget = config.feature_budget_mb * (1 << 20) / max(1, n_shapes * feature_dim * 2)
    return int(max(config.n_sample, min(config.feature_pool, budget)))


@single_threaded
def train_student(collection: Sequence[tuple[PointCloudLike, KnowledgeUnits]], n_parts: int,
                  config: DistillConfig,
                  labelled: Sequence[tuple[PointCloudLike, np.ndarray]] | None = None,
                  ) -> TrainedStudent:
    """Pre-alignment training: one student over a collection of unlabelled shapes.

    collection: (shape, units) pairs (ground truth is never read); labelled: optional
    few-shot (shape, point_labels (N,) int, -1 ignored) pairs adding ``fewshot_weight``
    x cross-entropy. Frozen features are computed once per shape and kept for
    `feature_pool_size` points (float16); each step samples ``n_sample`` of them per
    shape, so a step's cost does not grow with the shapes' size, and an epoch
    (`pre_steps_per_epoch`) visits every shape once. The last state is kept. Runs on one
    torch thread (`single_threaded`): repeatable, and on a loaded shared machine two
    threads that wait on each other made a step 8x slower (1.6 s against 0.2 s).
    """
    start = time.perf_counter()
    labelled = list(labelled or [])
    for shape, units in collection:
        _check_units(units, len(shape.points), n_parts)
    for shape, labels in labelled:
        if np.asarray(labels).shape != (len(shape.points),):
            raise InputError("few-shot labels", f"shape {np.asarray(labels).shape} does "
                             f"not match {len(shape.points)} points")
    device, rng, gen, encoder = _setup(config)
    student = _new_student(encoder, n_parts, config, device)
    if config.align == "axes" and (collection or labelled):
        # the reference is a training shape; every shape is rotated onto it, here and
        # wherever the student is applied (`apply_student`)
        student.aligner = Aligner.from_collection(
            [np.asarray(s.points) for s, _ in [*collection, *labelled]], config.seed)
        collection = [(aligned(s, student.aligner), u) for s, u in collection]
        labelled = [(aligned(s, student.aligner), g) for s, g in labelled]
    usable = sum(_usable(u) for _, u in collection)
    if usable == 0 and not labelled:
        warnings.warn("no shape of the collection has usable knowledge units: every "
                      "labelling is uniform (part 0)", stacklevel=2)
        return TrainedStudent(student, [], None, False, [None] * len(collection), 0,
                              time.perf_counter() - start)
    if usable < len(collection):
        warnings.warn(f"{len(collection) - usable} of {len(collection)} shapes have no "
                      "usable knowledge units; the collection's student labels them",
                      stacklevel=2)
    empty = KnowledgeUnits(np.zeros(0, np.int32), np.zeros((0, 0), bool), np.zeros(0, np.float32),
                           np.zeros(0, np.int32), np.zeros(0, np.int32))
    # Copies follow the originals, so items[:len(collection)] are the collection's shapes.
    copies = [] if encoder.trainable else [
        (_augmented_copy(s, config, gen), u) for _ in range(config.feature_copies)
        for s, u in collection]
    n_items = len(collection) + len(copies) + len(labelled)
    pool = feature_pool_size(n_items, encoder.out_dim, config)
    items = [_make_item(student, s, u, None, pool, rng, True, config.n_sample)
             for s, u in [*collection, *copies]]
    items += [_make_item(student, s, empty, np.asarray(g), pool, rng, True, config.n_sample)
              for s, g in labelled]
    _set_normalisation(student, items)
    class_w = (class_weights([u for _, u in collection], n_parts,
                             [np.asarray(g) for _, g in labelled])
               if config.class_weighting else np.ones(n_parts, np.float32))
    steps = pre_steps_per_epoch(n_items, config)
    losses, bd_epoch, forced = _train(student, items, n_parts, class_w, config, steps,
                                      max(1, min(config.batch_size, n_items)), rng, gen)
    return TrainedStudent(student, losses, bd_epoch, forced,
                          [item.rescored for item in items[:len(collection)]],
                          steps * config.epochs, time.perf_counter() - start)


@single_threaded
def apply_student(student: Student, shape: PointCloudLike,
                  units: KnowledgeUnits | None = None, trained: TrainedStudent | None = None,
                  index: int | None = None) -> DistillResult:
    """Label every point of ``shape`` with a (saved or just trained) student; a student
    trained with ``align="axes"`` first rotates the shape onto its reference (the
    labels are per point, so they are the shape's as it is).

    With ``units``, the result's C_bd is Eq. 4's agreement of the student's labels with
    them; for shape ``index`` of ``trained``'s own collection it is the C_bd its
    backward distillation computed instead (what the student was re-weighted by).
    """
    probs = student.predict(aligned(shape, student.aligner))
    labels = probs.argmax(axis=1).astype(np.int32)
    rescored = None
    if trained is not None and index is not None:
        rescored = trained.rescored[index]
    elif units is not None:
        rescored = rescore_units(labels, units)
    losses = trained.losses if trained is not None else []
    bd_epoch = trained.bd_epoch if trained is not None else None
    return DistillResult(probs, labels, rescored, list(losses), bd_epoch,
                         bool(trained and trained.bd_forced),
                         units is not None and not _usable(units))


def distill_pre(collection: Sequence[tuple[PointCloudLike, KnowledgeUnits]], n_parts: int,
                config: DistillConfig,
                labelled: Sequence[tuple[PointCloudLike, np.ndarray]] | None = None,
                ) -> tuple[Student, list[DistillResult]]:
    """Transductive pre-alignment: `train_student` on a collection, then label its
    shapes (shapes without units too: the student learnt from the others). Returns
    (the trained student, one DistillResult per collection shape, in order)."""
    trained = train_student(collection, n_parts, config, labelled)
    if not trained.losses and not labelled:  # nothing to learn from: uniform, as TTA
        return trained.student, [_uniform(len(s.points), n_parts) for s, _ in collection]
    return trained.student, [apply_student(trained.student, s, u, trained, i)
                             for i, (s, u) in enumerate(collection)]


def distill_collection(collection: Sequence[tuple[PointCloudLike, KnowledgeUnits]],
                       n_parts: int, config: DistillConfig,
                       labelled: Sequence[tuple[PointCloudLike, np.ndarray]] | None = None,
                       ) -> list[DistillResult]:
    """Label every shape of ``collection`` with the schedule ``config.mode`` names:
    'tta' (`distill_tta` per shape; few-shot ``labelled`` shapes need 'pre') or 'pre'
    (`distill_pre`). Returns one DistillResult per shape, in order."""
    if config.mode == "pre":
        return distill_pre(collection, n_parts, config, labelled)[1]
    if config.mode != "tta":
        raise InputError("distill", f"mode must be 'tta' or 'pre', not {config.mode!r}")
    if labelled:
        raise InputError("distill", "few-shot labelled shapes need mode 'pre' (one "
                         "student over the collection)")
    return [distill_tta(shape, units, n_parts, config) for shape, units in collection]


# --- the `distill` stage -------------------------------------------------------------


def detected_part_names(workspace: Workspace, shape_id: str) -> list[str]:
    """The part names the teacher was asked for (the label space of the units)."""
    artifact = workspace.read(shape_scope(shape_id), "detect", names=[])
    return list(artifact.record_attrs.get("part_names", []))


def _with_faces(shape: Shape, result: DistillResult, part_names: list[str],
                method: str) -> Labelling:
    from .backproject import face_labels_from_points

    labelling = result.to_labelling(part_names, method)
    if shape.mesh is not None:
        labelling.face_labels = face_labels_from_points(
            shape.points, result.point_probs, shape.mesh.vertices, shape.mesh.faces, k=5)
    return labelling


def load_labelled(path: Path, part_names: list[str], n_points: int, seed: int
                  ) -> list[tuple[Shape, np.ndarray]]:
    """Few-shot shapes with ground truth, labels re-indexed into ``part_names``."""
    from .shapes import discover, load_shape

    sources, problems = discover(path)
    if problems:
        raise InputError(problems[0][0], problems[0][1])
    labelled = []
    for source in sources:
        shape = load_shape(source, n_points=n_points, seed=seed)
        if shape.point_labels is None:
            raise InputError(source.path, "few-shot shape has no part labels")
        if sorted(shape.part_names) != sorted(part_names):
            raise InputError(source.path, f"part names {shape.part_names} differ from the "
                             f"collection's {part_names}")
        index = {name: i for i, name in enumerate(part_names)}
        lookup = np.array([index[name] for name in shape.part_names] + [-1], np.int32)
        labelled.append((shape, lookup[shape.point_labels]))
    if not labelled:
        raise InputError(path, "no labelled shapes found")
    return labelled


def _rescored_arrays(result: DistillResult) -> dict[str, np.ndarray]:
    """The C_bd stored beside a labelling (read by the rescore stage), if there is one."""
    if result.rescored_confidence is None:
        return {}
    return {"rescored_confidence": np.asarray(result.rescored_confidence, np.float32)}


def stage_params(config: DistillConfig) -> dict[str, object]:
    """Everything that changes the result (not the device, nor ``align`` where it has no
    effect)."""
    params = dataclasses.asdict(config)
    params.pop("device")
    if config.align == "none" or config.mode == "tta":
        # no effect there: left out, so that results stored before the option keep their keys
        params.pop("align")
    return params


def run(workspace: Workspace, shape_ids: list[str], config: DistillConfig,
        force: bool = False, output: str = "distill", labels: Path | None = None,
        n_points: int = 10000, train_ids: list[str] | None = None,
        student: str | None = None, collection_ids: list[str] | None = None
        ) -> list[StageReport]:
    """Distil a student from the knowledge units and store a labelling of each shape.

    ``tta``: one head per shape (cached per shape). ``pre``: a student per part list,
    trained on ``train_ids`` (inductive) or on ``collection_ids`` (default
    ``shape_ids``: transductive, the shapes being labelled; a shard passes the whole
    selection so that every shard applies one student), saved as a model folder
    (``student``, default ``W/students/<output>-<category>``), reused while its key
    holds; or, with ``student`` and no ``train_ids``, a saved student applied as it is.
    """
    check_config(config)
    if config.mode != "pre" and (labels is not None or train_ids or student):
        raise PartsegError("--labels, --train-ids and --student need --mode pre")
    if config.encoder_checkpoint is not None:
        from .encoders import build_encoder

        # a bad file is refused once, before any shape is read (each would fail alike)
        build_encoder(config.encoder, config.encoder_checkpoint, "cpu")
    params = stage_params(config)
    if config.mode == "tta":
        def compute(shape_id: str) -> tuple[Labelling, dict[str, np.ndarray]]:
            scope = shape_scope(shape_id)
            shape = workspace.read_record(scope, "shape", Shape)
            units = workspace.read_record(scope, "backproject", KnowledgeUnits)
            names = detected_part_names(workspace, shape_id)
            result = distill_tta(shape, units, len(names), config)
            if result.no_units:
                warnings.warn(f"{shape_id}: no knowledge units; labelled uniformly",
                              stacklevel=2)
            return _with_faces(shape, result, names, output), _rescored_arrays(result)

        return [run_per_shape(workspace, output, shape_ids, params, ["shape", "backproject"],
                              compute, force)]
    return _run_pre(workspace, shape_ids, config, force, output, labels, n_points, train_ids,
                   student, collection_ids)


# --- pre-alignment: saved students, collections per part list, shards ------------------

STUDENT_KIND = "partdistill-student"
STUDENTS_DIR = "students"
_INPUTS = ["shape", "backproject"]


def save_student(path: Path, trained: TrainedStudent, config: DistillConfig,
                 part_names: list[str], key: str, training: dict[str, str],
                 few_shot: list[str]) -> None:
    """A model folder (saved_model.py, kind ``partdistill-student``): the student's
    weights (head, its feature statistics, a trainable encoder's weights), the config,
    part names, encoder, the keys of the shapes it trained on (``training``: shape id ->
    "shape" stage key) and, per training shape, the C_bd its backward distillation
    computed (tensors ``rescored.<shape id>``, read back by `load_student`); with
    ``align="axes"``, the reference cloud its shapes were rotated onto (tensor
    ``align.reference``)."""
    import torch

    from .saved_model import save_model

    state = {f"student.{k}": v for k, v in trained.student.state_dict().items()}
    for sid, c_bd in zip(training, trained.rescored, strict=True):
        if c_bd is not None:
            state[f"rescored.{sid}"] = torch.as_tensor(np.asarray(c_bd, np.float32))
    aligner = trained.student.aligner
    if aligner is not None:  # applied elsewhere, the student must align as it trained
        state["align.reference"] = torch.as_tensor(np.asarray(aligner.reference, np.float32))
    meta = {"config": stage_params(config), "part_names": list(part_names),
            "encoder": config.encoder, "encoder_frozen": not trained.student.encoder.trainable,
            "feature_dim": int(trained.student.encoder.out_dim),
            "training_shapes": training, "few_shot": few_shot,
            "loss_history": [round(v, 6) for v in trained.losses],
            "bd_epoch": trained.bd_epoch, "bd_forced": trained.bd_forced,
            "steps": trained.steps, "train_seconds": round(trained.seconds, 2)}
    save_model(path, kind=STUDENT_KIND, key=key, meta=meta, state_dict=state)


@dataclass
class LoadedStudent:
    """A saved student: its key, part names and training shapes from its model.json at
    once; the network and the C_bd it stored (torch) only on first use, so that a fully
    cached `distill --mode pre` never imports torch. ``device`` may be "auto"."""

    key: str
    part_names: list[str]
    training: dict[str, str]  # shape id -> "shape" stage key, in the training workspace
    path: Path
    device: str = "cpu"
    _network: tuple[Student, dict[str, np.ndarray]] | None = None

    @property
    def student(self) -> Student:
        return self._load()[0]

    @property
    def rescored(self) -> dict[str, np.ndarray]:
        """shape id -> C_bd of its training."""
        return self._load()[1]

    def _load(self) -> tuple[Student, dict[str, np.ndarray]]:
        if self._network is None:
            self._network = _load_network(self.path, resolve_device(self.device))
        return self._network


def load_student(path: Path, device: str = "cpu") -> LoadedStudent:
    """A saved student (its weights are read on first use); one-line ModelError for a
    missing, foreign or corrupt folder."""
    from .errors import ModelError
    from .saved_model import check_weights, read_document

    document = read_document(path, kind=STUDENT_KIND)
    check_weights(path)
    meta = document.get("meta") or {}
    try:
        part_names = [str(p) for p in meta["part_names"]]
        training = {str(k): str(v) for k, v in meta["training_shapes"].items()}
    except (KeyError, TypeError, AttributeError) as err:
        raise ModelError(f"{path}: not a valid PartDistill student ({err})") from None
    return LoadedStudent(str(document.get("key", "")), part_names, training, Path(path),
                         device)


def _load_network(path: Path, device: str) -> tuple[Student, dict[str, np.ndarray]]:
    """The student network saved at ``path`` and the C_bd of its training shapes."""
    from .encoders import build_encoder
    from .errors import ModelError, state_dict_mismatch
    from .models.student import Head, Student
    from .saved_model import load_model

    saved = load_model(path, kind=STUDENT_KIND, device=device)
    meta = saved.meta
    try:
        fields = {f.name for f in dataclasses.fields(DistillConfig)}
        stored = {k: v for k, v in meta["config"].items() if k in fields}
        stored["hidden"] = tuple(stored.get("hidden", DistillConfig.hidden))
        stored["scale_range"] = tuple(stored.get("scale_range", DistillConfig.scale_range))
        stored.setdefault("align", "none")  # not stored: saved before the option, or none
        config = DistillConfig(**{**stored, "encoder_checkpoint": None, "device": device})
        n_parts = len(meta["part_names"])
        encoder = _density_matched(build_encoder(config.encoder, None, device), config)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{path}: not a valid PartDistill student ({err})") from None
    if meta.get("encoder_frozen", True) and encoder.trainable:
        encoder.trainable = False  # trained from a user's frozen checkpoint
        encoder.requires_grad_(False)
    head = Head(encoder.out_dim, n_parts, config.hidden)
    student = Student(encoder, head, config.shape_standardise).to(device)
    weights = {k.removeprefix("student."): v for k, v in saved.state_dict.items()
               if k.startswith("student.")}
    problem = state_dict_mismatch(student.state_dict(), weights)
    if problem:
        raise ModelError(f"{path}: weights do not match a {config.encoder} student with "
                         f"{n_parts} parts: {problem}")
    student.load_state_dict(weights)
    if config.align == "axes":
        reference = saved.state_dict.get("align.reference")
        if reference is None or tuple(reference.shape[1:]) != (3,) or len(reference) == 0:
            raise ModelError(f"{path}: a student trained with --align axes, but its "
                             "reference cloud (align.reference) is missing or malformed")
        student.aligner = Aligner(reference.cpu().numpy().astype(np.float32), config.seed)
    rescored = {k.removeprefix("rescored."): v.numpy() for k, v in saved.state_dict.items()
                if k.startswith("rescored.")}
    return student.eval(), rescored


def _part_groups(workspace: Workspace, shape_ids: list[str]) -> dict[tuple[str, ...], list[str]]:
    """Shape ids by the part list the teacher was asked for, in order."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for sid in shape_ids:
        groups.setdefault(tuple(detected_part_names(workspace, sid)), []).append(sid)
    return groups


def _group_names(workspace: Workspace, groups: dict[tuple[str, ...], list[str]]
                 ) -> dict[tuple[str, ...], str]:
    """A folder name per part list: the category its shapes share, else "parts"; with a
    hash of the part list when two part lists would get the same name."""
    from .store import content_key, safe_id

    names = {}
    for parts, ids in groups.items():
        categories = {workspace.read(shape_scope(s), "shape", names=[]).record_attrs.get(
            "category", "") for s in ids}
        one = next(iter(categories)) if len(categories) == 1 else ""
        names[parts] = safe_id(one) if one else "parts"
    clash = [n for n in names.values() if list(names.values()).count(n) > 1]
    return {parts: (f"{name}-{content_key('parts', 1, {}, list(parts))[:8]}"
                    if name in clash or name == "parts" else name)
            for parts, name in names.items()}


def _train_or_reuse(workspace: Workspace, train_ids: list[str], part_names: list[str],
                    config: DistillConfig, path: Path, force: bool, labels: Path | None,
                    n_points: int, report: StageReport) -> LoadedStudent:
    """The student of ``train_ids`` saved at ``path``: trained (under a workspace lock,
    so that concurrent shards train it once) unless a student of the same key is there."""
    from .saved_model import is_model_folder

    few_shot: list[str] = []
    if labels is not None:
        from .shapes import discover, source_digest

        few_shot = [source_digest(s) for s in discover(labels)[0]]
    key = collection_key(workspace, "distill", train_ids, stage_params(config), _INPUTS,
                         few_shot + list(part_names))

    def current() -> LoadedStudent | None:
        if not is_model_folder(path):
            return None
        loaded = load_student(path, config.device)
        return loaded if loaded.key == key else None

    with workspace.lock(f"student-{path.resolve()}"):
        loaded = None if force else current()
        if loaded is not None:
            report.skipped += list(train_ids)
            return loaded
        shapes = [workspace.read_record(shape_scope(s), "shape", Shape) for s in train_ids]
        units = [workspace.read_record(shape_scope(s), "backproject", KnowledgeUnits)
                 for s in train_ids]
        labelled = (load_labelled(labels, part_names, n_points, config.seed)
                    if labels is not None else None)
        # "auto" is resolved only here and when a student loads: a cached run needs no torch
        config = dataclasses.replace(config, device=resolve_device(config.device))
        trained = train_student(list(zip(shapes, units, strict=True)), len(part_names), config,
                                labelled)
        training = {sid: workspace.key(shape_scope(sid), "shape") or "" for sid in train_ids}
        save_student(path, trained, config, part_names, key, training, few_shot)
        report.computed += list(train_ids)
        return load_student(path, config.device)


def _check_applicable(workspace: Workspace, shape_ids: list[str], loaded: LoadedStudent) -> None:
    for sid in shape_ids:
        scope = shape_scope(sid)
        if workspace.exists(scope, "detect"):
            own = detected_part_names(workspace, sid)
        else:
            own = list(workspace.read(scope, "shape", names=[]).record_attrs.get(
                "part_names", []))
        if own and own != loaded.part_names:
            raise PartsegError(f"{loaded.path}: the student knows parts {loaded.part_names}, "
                               f"but {sid} has {own}")


def _apply(workspace: Workspace, shape_ids: list[str], loaded: LoadedStudent, output: str,
           alignment: str, force: bool) -> StageReport:
    """Store the student's labelling of ``shape_ids`` (keyed by the student's key), its
    C_bd (array ``rescored_confidence``) when the shape has units, and mark shapes the
    student trained on (``training_shape``)."""
    training_keys = set(loaded.training.values())
    params = {"student": loaded.key, "alignment": alignment,
              "part_names": loaded.part_names}
    with_units = [s for s in shape_ids if workspace.exists(shape_scope(s), "backproject")]
    bare = [s for s in shape_ids if s not in set(with_units)]

    def compute(shape_id: str) -> tuple[Labelling, dict[str, np.ndarray]]:
        scope = shape_scope(shape_id)
        shape = workspace.read_record(scope, "shape", Shape)
        units = (workspace.read_record(scope, "backproject", KnowledgeUnits)
                 if shape_id in with_units else None)
        trained_on = workspace.key(scope, "shape") in training_keys
        result = apply_student(loaded.student, shape, units)
        if trained_on and shape_id in loaded.rescored:
            result.rescored_confidence = loaded.rescored[shape_id]
        labelling = _with_faces(shape, result, loaded.part_names, output)
        # Transductive labellings are of the training shapes by design (as TTA's are):
        # only an inductive student's own training shapes are kept out of test figures.
        labelling.training_shape = trained_on and alignment == "inductive"
        return labelling, _rescored_arrays(result)

    report = run_per_shape(workspace, output, with_units, params, _INPUTS, compute, force)
    if bare:
        more = run_per_shape(workspace, output, bare, params, ["shape"], compute, force)
        report.computed += more.computed
        report.skipped += more.skipped
        report.failed.update(more.failed)
    return report


def _run_pre(workspace: Workspace, shape_ids: list[str], config: DistillConfig, force: bool,
             output: str, labels: Path | None, n_points: int, train_ids: list[str] | None,
             student: str | None, collection_ids: list[str] | None) -> list[StageReport]:
    from .pipeline import select_shapes
    from .saved_model import resolve_model_path

    training = StageReport(f"{output} (student)")
    if student and not train_ids and labels is not None:
        raise PartsegError("--labels trains a student: give --train-ids with --student, "
                           "or omit --student")
    if student and not train_ids:  # apply a saved student, no training
        path = resolve_model_path(student, workspace.root)
        loaded = load_student(path, config.device)
        _check_applicable(workspace, shape_ids, loaded)
        return [_apply(workspace, shape_ids, loaded, output, "inductive", force)]
    inductive = bool(train_ids)
    pool = select_shapes(workspace, train_ids) if inductive else (collection_ids or shape_ids)
    if not pool:
        raise PartsegError("the training set is empty")
    groups = _part_groups(workspace, pool)
    if student and len(groups) > 1:
        raise PartsegError(f"the training shapes have {len(groups)} part lists; --student "
                           "saves one student: select one category with --train-ids")
    students: dict[tuple[str, ...], LoadedStudent] = {}
    folder_names = _group_names(workspace, groups)
    for names, ids in groups.items():
        if student:
            path = resolve_model_path(student, workspace.root)
        else:
            path = workspace.root / STUDENTS_DIR / f"{output}-{folder_names[names]}"
        students[names] = _train_or_reuse(workspace, ids, list(names), config, path, force,
                                          labels, n_points, training)
    reports = [training]
    for names, ids in _part_groups(workspace, shape_ids).items():
        if names not in students:
            raise PartsegError(f"{ids[0]}: no training shape has its part list "
                               f"{list(names)}; add such shapes to --train-ids")
        reports.append(_apply(workspace, ids, students[names], output,
                              "inductive" if inductive else "transductive", force))
    if len(reports) > 2:  # one line per stage: merge the per-category labelling reports
        merged = StageReport(output)
        for r in reports[1:]:
            merged.computed += r.computed
            merged.skipped += r.skipped
            merged.failed.update(r.failed)
        reports = [training, merged]
    return reports

"""Simulated 2D teacher: a measuring instrument, not a model.

With no vision-language model weights available, segmentation quality is measured with a
teacher that *reads the ground truth* to decide where its boxes go and degrades it the way
a real teacher errs: GLIP-like part boxes (`simulate_boxes`), CLIPSeg/PointCLIP-like pixel
maps (`simulate_pixel_maps`) and an oracle box -> mask refiner (`simulate_masks`, the
ground-truth region cut to the box: an upper bound, not a SAM stand-in; `sam_refine`'s
GrabCut is the appearance-driven one). It needs ground-truth part labels and refuses
unlabelled shapes; its numbers say how well a 3D method lifts *this kind* of noisy 2D
evidence, never how well partseg segments a new shape. Real teachers are the product.

Input everywhere is a stack of ground-truth label images `gt (V, H, W) int32`: the part
index of the point seen at each pixel, -1 for background or unlabelled points
(`ground_truth_images`). Boxes also see the rendered RGB images and the silhouette.

What the box teacher may and may not read. The ground truth decides which boxes exist,
where they are and which name they get (that is the simulation). A box's confidence and
feature vector are computed only from what a detector could see: the box's geometry, the
rendered pixels inside it, its overlap with the view's other boxes, the view, the name it
was given, and the detector's latent evidence for it, a number drawn *before* the box's
errors and independent of the labels, which makes a weakly evidenced box both looser and
more often misnamed and lowers its score, as a real detector's errors go with low scores.
No confidence or feature reads the box's ground-truth purity or correctness
(`tests/test_simulated.py` checks this by relabelling pixels). The one exception is the
`glip-like-leaky` preset, the earlier instrument kept for comparison, whose confidence and
first feature dims are linear in purity: it leaks the answer and must not be used to rate
methods that read confidences or features.

Randomness. Per-view noise comes from `np.random.default_rng([seed, view, stream])`, so
a view's boxes do not depend on which other views are simulated. Label confusions are
systematic, as a VLM's are: a confusion matrix fixed by the category and its part names
(the same for every shape and seed: which part is mistaken for which, and how often), and
a per-shape shift of each part's confusion rate drawn from `seed` alone, so a shape whose
legs are called arms has it so in every view.

What a real box teacher gets wrong, and the knob that controls it (`TeacherPreset`):
- small parts are missed (`detect_max`, `detect_half_area`);
- boxes are loose and leak into neighbouring parts (`jitter`, `expand`);
- several instances of a part share one box, e.g. all chair legs (`merge_prob`);
- a box gets another part's name (`confusion_*`);
- boxes on nothing in particular (`false_positives`) and whole-object boxes
  (`whole_object_prob`), some of them cut short so they survive the whole-object filter
  of the lifting step (`whole_object_cut_prob`, `whole_object_shrink`);
- confidences track evidence, box size and appearance, not truth (`conf_*`, `evidence_*`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from partseg_cli import records
from partseg_cli.errors import InputError, PartsegError
from partseg_cli.teacher_metrics import box_purity, box_sums, pixel_corners

DESCRIPTION = (
    "simulated: a measuring instrument, not a model. Reads the shape's ground-truth part "
    "labels to place VLM-like noisy boxes or pixel maps (presets: glip-like, clean, weak; "
    "glip-like-leaky is the earlier instrument whose confidences and features leak "
    "ground-truth purity) so that lifting and distillation can be scored without model "
    "weights. Box confidences and features come only from what a detector sees. Needs "
    "labelled shapes and refuses unlabelled ones; use a real teacher to segment new shapes."
)

# Streams keep the random draws of the simulators independent of each other.
_STREAM_BOXES, _STREAM_PIXELS, _STREAM_MASKS, _STREAM_SHAPE = 0, 1, 2, 3
_N_OBSERVED = 17  # feature dims of geometry, appearance, overlap and view (`_box_features`)
_LOG_AREA = 15  # the column of `_box_features` holding log(box area / silhouette area)
BACKGROUND_RGB = 255  # renders have a white background (render.BACKGROUND)


@dataclass(frozen=True)
class TeacherPreset:
    """Every noise knob of the simulated teacher. Areas are fractions of the view's
    labelled foreground, lengths fractions of the box (or image) side."""

    name: str
    # --- detection -------------------------------------------------------------------
    detect_max: float  # probability of detecting a large component
    detect_half_area: float  # component area (fraction of foreground) detected half as often
    component_gap: float  # same-part pixels closer than this (fraction of image side) are one
    #                       component: bridges the gaps between splatted points
    # --- geometry --------------------------------------------------------------------
    jitter: float  # std of each box side's shift, fraction of box width/height
    expand: float  # mean outward growth of each side, fraction of box size (semantic leaking)
    merge_prob: float  # probability that all detected components of a part share one box
    # --- semantics -------------------------------------------------------------------
    confusion_prob: float  # mean probability that a box is given a wrong part name
    false_positives: float  # expected number of boxes on random object regions per view
    whole_object_prob: float  # probability per view of one box around the whole object
    # --- scores ----------------------------------------------------------------------
    conf_min: float  # confidences lie in [conf_min, 0.99] (a detector threshold)
    prob_margin: float  # logit margin of the chosen label over the others in part_probs
    # --- pixel maps --------------------------------------------------------------------
    pixel_blur: float  # gaussian sigma of the maps, fraction of image side
    pixel_flip_prob: float  # probability that a component's region takes another label
    pixel_sharpness: float  # logit scale of the clean one-hot maps before softmax
    pixel_noise: float  # std of smooth logit noise
    pixel_spill: float  # how much blurred probability spills onto background pixels
    # --- oracle masks --------------------------------------------------------------------
    mask_boundary: float  # std of smooth boundary noise, in pixels of blur
    mask_leak_prob: float  # probability that a mask also swallows the next region in its box
    mask_miss_prob: float  # probability that a mask keeps only part of its region
    # --- systematic confusions (defaults: none beyond confusion_prob) -------------------
    confusion_spread: float = 0.0  # log-normal spread of the rate across a category's parts
    confusion_concentration: float = 100.0  # Dirichlet alpha of where a part's confusions
    #                                        go: small = always the same wrong part
    shape_confusion: float = 0.0  # std of a per-shape shift of each part's confusion logit
    # --- whole-object boxes -------------------------------------------------------------
    whole_object_cut_prob: float = 0.0  # probability that a whole-object box stops short of
    #                                     the object on one side (so it passes the filter)
    whole_object_shrink: float = 0.0  # how far short at most (fraction of the object size)
    # --- latent evidence and confidence (see the module docstring) ----------------------
    evidence_coupling: float = 0.0  # how strongly low evidence loosens and misnames a box
    false_positive_evidence: float = 0.0  # mean evidence of false-positive boxes (below 0)
    conf_bias: float = 0.0  # confidence logit of an average box
    conf_evidence: float = 0.0  # confidence logit per std of evidence
    conf_area: float = 0.0  # confidence logit per e-fold of box area (small boxes score low)
    conf_noise: float = 0.1  # std of confidence logit noise
    feature_observed: float = 1.0  # scale of the observed box properties in the features,
    #                                against unit noise (pooled activations are noisy)
    # --- the leaky instrument only (glip-like-leaky) ------------------------------------
    leaks_purity: bool = False  # confidence and features read ground-truth purity
    conf_base: float = 0.0  # leaky confidence of a box holding none of its part
    conf_slope: float = 0.0  # leaky confidence gained from 0 to 1 purity
    feature_signal: float = 0.0  # leaky: scale of purity in the first feature dims
    feature_signal_dims: int = 4  # leaky: how many dims carry it


PRESETS: dict[str, TeacherPreset] = {
    # Calibrated on the procedural dev shapes (bench/dev_shapes.py, 10 reference views) so
    # that the confidence-weighted 2D mIoU of the boxes (PartDistill supp. Eq. A-D) falls
    # in GLIP's measured band 0.40-0.60 (PartDistill Table 5: 42.8 airplane, 60.2 chair,
    # 53.6 knife) and the AUROC of confidence for right vs wrong boxes lies in 0.6-0.85
    # (informative, not an oracle), with features that do not predict purity. Dev, 6
    # shapes per category at 300 px (bench/bench_teacher.py --data dev): 2D mIoU 0.51 mean
    # (chair 0.39 ... lamp 0.61), AUROC 0.70, purity-from-features R^2 0.02.
    "glip-like": TeacherPreset(
        name="glip-like", detect_max=0.95, detect_half_area=0.015, component_gap=0.004,
        jitter=0.08, expand=0.12, merge_prob=0.4, confusion_prob=0.15, false_positives=0.6,
        whole_object_prob=0.15, conf_min=0.3, prob_margin=2.0,
        pixel_blur=0.01, pixel_flip_prob=0.3, pixel_sharpness=4.0, pixel_noise=1.0,
        pixel_spill=0.5, mask_boundary=2.0, mask_leak_prob=0.15, mask_miss_prob=0.1,
        confusion_spread=0.6, confusion_concentration=0.5, shape_confusion=1.0,
        whole_object_cut_prob=0.5, whole_object_shrink=0.15, evidence_coupling=1.0,
        false_positive_evidence=-1.0,
        conf_bias=0.0, conf_evidence=1.0, conf_area=0.3, conf_noise=0.8, feature_observed=0.5,
    ),
    # Near-perfect: every component boxed tightly with its own name. For sanity checks.
    "clean": TeacherPreset(
        name="clean", detect_max=1.0, detect_half_area=0.0, component_gap=0.004,
        jitter=0.0, expand=0.0, merge_prob=0.0, confusion_prob=0.0, false_positives=0.0,
        whole_object_prob=0.0, conf_min=0.3, prob_margin=6.0,
        pixel_blur=0.0, pixel_flip_prob=0.0, pixel_sharpness=8.0, pixel_noise=0.0,
        pixel_spill=0.0, mask_boundary=0.0, mask_leak_prob=0.0, mask_miss_prob=0.0,
        conf_bias=4.0, conf_noise=0.0,
    ),
    # Worse than GLIP: many misses and confusions, weakly informative scores.
    "weak": TeacherPreset(
        name="weak", detect_max=0.8, detect_half_area=0.04, component_gap=0.004,
        jitter=0.15, expand=0.25, merge_prob=0.6, confusion_prob=0.3, false_positives=1.5,
        whole_object_prob=0.3, conf_min=0.3, prob_margin=1.0,
        pixel_blur=0.02, pixel_flip_prob=0.35, pixel_sharpness=3.0, pixel_noise=1.5,
        pixel_spill=0.8, mask_boundary=4.0, mask_leak_prob=0.3, mask_miss_prob=0.2,
        confusion_spread=0.6, confusion_concentration=0.5, shape_confusion=1.0,
        whole_object_cut_prob=0.5, whole_object_shrink=0.2, evidence_coupling=0.5,
        false_positive_evidence=-0.5,
        conf_bias=-0.5, conf_evidence=0.5, conf_area=0.2, conf_noise=1.0,
    ),
    # The earlier instrument, kept only to show what a leak looks like: confidence =
    # conf_base + conf_slope * purity + noise and feature dims 0-3 = purity + noise (a
    # linear fit recovers purity from the features), confusions drawn per view, whole-object
    # boxes always enclosing the object. It LEAKS the ground truth: never rate methods that
    # read confidences or features (backward distillation, learned box weights) with it.
    "glip-like-leaky": TeacherPreset(
        name="glip-like-leaky", detect_max=0.95, detect_half_area=0.015, component_gap=0.004,
        jitter=0.08, expand=0.12, merge_prob=0.4, confusion_prob=0.15, false_positives=0.6,
        whole_object_prob=0.15, conf_min=0.3, prob_margin=2.0,
        pixel_blur=0.01, pixel_flip_prob=0.3, pixel_sharpness=4.0, pixel_noise=1.0,
        pixel_spill=0.5, mask_boundary=2.0, mask_leak_prob=0.15, mask_miss_prob=0.1,
        leaks_purity=True, conf_base=0.45, conf_slope=0.3, conf_noise=0.1,
        feature_signal=1.0, feature_signal_dims=4,
    ),
}
DEFAULT_PRESET = "glip-like"


def get_preset(preset: str | TeacherPreset) -> TeacherPreset:
    """The preset object for a name (or the object itself); an unknown name lists the valid ones."""
    if isinstance(preset, TeacherPreset):
        return preset
    if preset not in PRESETS:
        raise PartsegError(
            f"unknown simulated-teacher preset {preset!r}; choose one of {', '.join(PRESETS)}"
        )
    return PRESETS[preset]


def ground_truth_images(pixel_point: np.ndarray, point_labels: np.ndarray | None,
                        source: str = "") -> np.ndarray:
    """Ground-truth label images from a render's pixel -> point map.

    pixel_point: (V, H, W) int32 point index, -1 background; point_labels: (N,) int32 part
    index, -1 unlabelled, or None for an unlabelled shape (refused: the simulated teacher
    reads the ground truth). Returns (V, H, W) int32, -1 background/unlabelled.
    """
    if point_labels is None or not np.any(np.asarray(point_labels) >= 0):
        raise InputError(
            source or "shape",
            "the simulated teacher needs ground-truth part labels and this shape has none; "
            "use a real teacher (a box or pixel VLM) for unlabelled shapes",
        )
    labels = np.asarray(point_labels, np.int32)
    return np.where(pixel_point >= 0, labels[np.maximum(pixel_point, 0)], -1).astype(np.int32)


def _check_gt(gt: np.ndarray, n_parts: int, part_names: list[str] | None = None) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.ndim != 3:
        raise ValueError(f"gt must be (V, H, W), got shape {gt.shape}")
    if part_names is not None and len(part_names) != n_parts:
        raise ValueError(f"{len(part_names)} part names for {n_parts} parts")
    if gt.size and (gt.min() < -1 or gt.max() >= n_parts):
        raise ValueError(f"gt labels must lie in [-1, {n_parts}), got [{gt.min()}, {gt.max()}]")
    if not np.any(gt >= 0):
        raise PartsegError(
            "the simulated teacher found no labelled pixel in the ground-truth images; it needs "
            "labelled shapes (use a real teacher for unlabelled ones)"
        )
    return gt.astype(np.int32, copy=False)


def _rng(seed: int, view: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, view, stream])


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


@dataclass
class _Components:
    """Per-part connected components of one view's label image (C components)."""

    label_map: np.ndarray  # (H, W) int32 component id of each labelled pixel, -1 elsewhere
    region_map: np.ndarray  # (P, H, W) int32 component id over its pixels and the
    #                         background gaps closed between them
    part: np.ndarray  # (C,) int32 part of each component
    area: np.ndarray  # (C,) int64 labelled pixels
    bbox: np.ndarray  # (C, 4) float32 XYXY pixel corners of its labelled pixels


def _components(gt_view: np.ndarray, n_parts: int, gap_px: int) -> _Components:
    """Connected components of each part's pixels, 8-connected after closing gaps of gap_px."""
    h, w = gt_view.shape
    label_map = np.full((h, w), -1, np.int32)
    region_map = np.full((n_parts, h, w), -1, np.int32)
    parts, areas, boxes = [], [], []
    structure = np.ones((3, 3), bool)
    footprint = _disk(gap_px) if gap_px > 0 else None
    offset = 0
    for p in np.unique(gt_view[gt_view >= 0]):
        mask = gt_view == p
        # Close the holes between splatted points so one visible part is one component,
        # as a person (or a VLM) would see it.
        region = ndimage.binary_dilation(mask, footprint) if footprint is not None else mask
        lab, n = ndimage.label(region, structure)
        # The closed region bridges background gaps but never takes other parts' pixels.
        region_map[p] = np.where(((lab > 0) & (gt_view < 0)) | mask, lab - 1 + offset, -1)
        label_map[mask] = lab[mask] - 1 + offset
        inside = np.where(mask, lab, 0)
        areas.append(np.bincount(inside.ravel(), minlength=n + 1)[1:])
        for sl in ndimage.find_objects(inside, n):
            boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
        parts.append(np.full(n, p, np.int32))
        offset += n
    return _Components(
        label_map=label_map,
        region_map=region_map,
        part=np.concatenate(parts).astype(np.int32),
        area=np.concatenate(areas).astype(np.int64),
        bbox=np.asarray(boxes, np.float32).reshape(-1, 4),
    )


def _gap_px(preset: TeacherPreset, h: int, w: int) -> int:
    return int(round(preset.component_gap * max(h, w)))


@dataclass(frozen=True)
class ConfusionModel:
    """The teacher's systematic naming errors for one category's part list.

    rate (P,): probability that a box of part p is named otherwise; target (P, P): where
    those boxes' names go (rows sum to 1, zero diagonal); false_label (P,): the names given
    to false-positive and whole-object boxes.
    """

    rate: np.ndarray
    target: np.ndarray
    false_label: np.ndarray


def confusion_model(category: str, part_names: list[str],
                    preset: str | TeacherPreset = DEFAULT_PRESET) -> ConfusionModel:
    """The confusion matrix of a category: fixed by the category and its part names (not by
    the seed or the shape), so errors persist across the shapes of a category."""
    cfg = get_preset(preset)
    n = len(part_names)
    rng = np.random.default_rng(zlib.crc32(f"{category}|{'|'.join(part_names)}".encode()))
    spread = cfg.confusion_spread
    rate = cfg.confusion_prob * np.exp(spread * rng.normal(size=n) - spread**2 / 2)
    target = np.zeros((n, n))
    for p in range(n):
        if n > 1:
            alpha = np.full(n - 1, cfg.confusion_concentration)
            target[p, np.arange(n) != p] = rng.dirichlet(alpha)
    false_label = rng.dirichlet(np.full(n, max(cfg.confusion_concentration, 1.0)))
    return ConfusionModel(rate=np.clip(rate, 0.0, 0.9), target=target, false_label=false_label)


def _shape_confusion_rate(model: ConfusionModel, cfg: TeacherPreset, seed: int) -> np.ndarray:
    """(P,) this shape's confusion rate per part: the category's, shifted once per shape."""
    shift = np.random.default_rng([seed, _STREAM_SHAPE]).normal(size=len(model.rate))
    rate = np.clip(model.rate, 1e-6, 1 - 1e-6)
    logit = np.log(rate / (1 - rate)) + cfg.shape_confusion * shift
    return np.where(model.rate > 0, 1 / (1 + np.exp(-logit)), 0.0)


def _pick(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """(B,) one index per row of probs (B, P) (rows sum to 1)."""
    if probs.shape[1] == 0:
        return np.zeros(len(probs), np.int64)
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cdf[:, -1:]
    return np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1)


def _view_boxes(gt_view: np.ndarray, foreground: np.ndarray, n_parts: int,
                preset: TeacherPreset, confusion: ConfusionModel, rate: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy boxes of one view: (B, 4) float32 XYXY, (B,) int32 label, (B,) float64 latent
    evidence of the detector for each box. Part areas are fractions of the silhouette
    ``foreground`` (H, W) bool, and false-positive and whole-object boxes are placed on it."""
    h, w = gt_view.shape
    comps = _components(gt_view, n_parts, _gap_px(preset, h, w))
    fg_area = max(int(np.count_nonzero(foreground)), 1)
    frac = comps.area / fg_area
    # Detection falls for small areas (GLIP misses handles and thin legs much more than
    # bodies): a logistic curve in log-area, half of detect_max at detect_half_area.
    p_detect = preset.detect_max * frac**2 / (frac**2 + preset.detect_half_area**2 + 1e-12)
    detected = rng.random(len(frac)) < p_detect

    xyxy, true_part = [], []
    merge = rng.random(n_parts) < preset.merge_prob
    for p in range(n_parts):
        sel = detected & (comps.part == p)
        if not sel.any():
            continue
        b = comps.bbox[sel]
        if merge[p] and len(b) > 1:
            b = np.concatenate([b[:, :2].min(0), b[:, 2:].max(0)])[None]
        xyxy.append(b)
        true_part.append(np.full(len(b), p, np.int32))
    boxes = np.concatenate(xyxy) if xyxy else np.zeros((0, 4), np.float32)
    truth = np.concatenate(true_part) if true_part else np.zeros(0, np.int32)

    # The detector's evidence for each box, drawn before its errors: weak evidence makes
    # a box looser and more often misnamed (and, in _confidence, lower scored).
    evidence = rng.normal(size=len(boxes))
    weakness = 2.0 / (1.0 + np.exp(preset.evidence_coupling * evidence))  # mean ~1

    # Loose boxes: each side moves by a jitter and grows outwards (semantic leaking).
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    outward = np.array([-1.0, -1.0, 1.0, 1.0])
    grow = rng.exponential(preset.expand, boxes.shape) if preset.expand > 0 else 0.0
    shift = rng.normal(0.0, 1.0, boxes.shape) * preset.jitter
    boxes = boxes + size * (outward * grow + shift) * weakness[:, None]

    labels = truth.copy()
    if n_parts > 1:
        confused = rng.random(len(labels)) < np.clip(rate[truth] * weakness, 0.0, 1.0)
        other = _pick(rng, confusion.target[truth])
        labels = np.where(confused, other, labels).astype(np.int32)

    ys, xs = np.nonzero(foreground)
    obj = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    obj_size = np.concatenate([obj[2:] - obj[:2]] * 2)
    extra_boxes, extra_labels, extra_evidence = [], [], []
    n_fp = rng.poisson(preset.false_positives)
    if n_fp:
        # Anchored on random object pixels, sized like a part of the object.
        centre = rng.integers(0, len(xs), n_fp)
        half = rng.uniform(0.05, 0.3, (n_fp, 2)) * obj_size[:2]
        c = np.stack([xs[centre], ys[centre]], axis=1).astype(np.float32)
        extra_boxes.append(np.concatenate([c - half, c + half], axis=1))
        extra_labels.append(_pick(rng, np.tile(confusion.false_label, (n_fp, 1))))
        extra_evidence.append(preset.false_positive_evidence + rng.normal(size=n_fp))
    if rng.random() < preset.whole_object_prob:
        # Every side overshoots by up to 3%; some boxes stop short of the object on one side.
        inward = rng.uniform(-0.03, 0.0, 4)
        cut, side = rng.random() < preset.whole_object_cut_prob, rng.integers(4)
        inward[side] = rng.uniform(0.02, max(preset.whole_object_shrink, 0.02)) if cut else \
            inward[side]
        extra_boxes.append((obj - obj_size * inward * outward)[None])
        extra_labels.append(_pick(rng, confusion.false_label[None]))
        extra_evidence.append(rng.normal(size=1))
    if extra_boxes:
        boxes = np.concatenate([boxes, *extra_boxes])
        labels = np.concatenate([labels, *extra_labels]).astype(np.int32)
        evidence = np.concatenate([evidence, *extra_evidence])

    boxes = np.clip(boxes, 0.0, [w, h, w, h]).astype(np.float32)
    # Keep at least one pixel per box after clipping.
    boxes[:, 2:] = np.maximum(boxes[:, 2:], np.minimum(boxes[:, :2] + 1.0, [w, h]))
    boxes[:, :2] = np.minimum(boxes[:, :2], boxes[:, 2:] - 1.0)
    return boxes, labels.astype(np.int32), evidence


def _pairwise_iou(xyxy: np.ndarray) -> np.ndarray:
    """(B, B) IoU of XYXY boxes, 0 on the diagonal."""
    lo = np.maximum(xyxy[:, None, :2], xyxy[None, :, :2])
    hi = np.minimum(xyxy[:, None, 2:], xyxy[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = np.prod(xyxy[:, 2:] - xyxy[:, :2], axis=-1)
    iou = inter / np.maximum(area[:, None] + area[None] - inter, 1e-9)
    np.fill_diagonal(iou, 0.0)
    return iou


def _box_features(images: np.ndarray, foreground: np.ndarray, view: np.ndarray,
                  xyxy: np.ndarray) -> np.ndarray:
    """(B, _N_OBSERVED) what a detector sees of each box, no ground truth.

    Columns: centre x, y and width, height (fractions of the image), log aspect ratio;
    silhouette fill (object pixels / box pixels); mean and std of R, G, B over the box
    (in [0, 1]); mean gradient magnitude (edge density); the largest IoU with another box
    of the view and how many of them overlap it (IoU > 0.1); the box's area relative to
    the view's silhouette (log); the view index as a fraction of the views.
    """
    n_views, h, w = foreground.shape
    rgb = images.astype(np.float64) / 255.0
    grey = rgb.mean(axis=-1)
    gy, gx = np.gradient(grey, axis=(1, 2))
    channels = np.concatenate([foreground[..., None].astype(np.float64), rgb, rgb**2,
                               np.hypot(gx, gy)[..., None]], axis=-1)  # (V, H, W, 8)
    table = np.zeros((n_views, h + 1, w + 1, channels.shape[-1]))
    table[:, 1:, 1:] = channels.cumsum(1).cumsum(2)
    corners = pixel_corners(xyxy, w, h)
    sums = box_sums(table, view, corners)
    pixels = np.maximum(np.prod(corners[:, 2:] - corners[:, :2], axis=1), 1)[:, None]
    mean = sums / pixels
    colour_std = np.sqrt(np.maximum(mean[:, 4:7] - mean[:, 1:4] ** 2, 0.0))
    max_iou = np.zeros(len(xyxy))
    n_overlap = np.zeros(len(xyxy))
    for v in np.unique(view):
        sel = np.flatnonzero(view == v)
        iou = _pairwise_iou(xyxy[sel].astype(np.float64))
        max_iou[sel] = iou.max(axis=1, initial=0.0)
        n_overlap[sel] = (iou > 0.1).sum(axis=1)
    extent = (xyxy[:, 2:] - xyxy[:, :2]) / [w, h]
    silhouette = np.maximum(foreground.reshape(n_views, -1).sum(axis=1), 1)[view]
    return np.column_stack([
        (xyxy[:, 0] + xyxy[:, 2]) / 2 / w, (xyxy[:, 1] + xyxy[:, 3]) / 2 / h, extent,
        np.log(np.maximum(extent[:, 0], 1e-6) / np.maximum(extent[:, 1], 1e-6)),
        mean[:, 0], mean[:, 1:4], colour_std, mean[:, 7], max_iou, n_overlap,
        np.log(pixels[:, 0] / silhouette), view / max(n_views - 1, 1),
    ])


def simulate_boxes(gt: np.ndarray, n_parts: int, part_names: list[str],
                   preset: str | TeacherPreset = DEFAULT_PRESET, seed: int = 0,
                   feature_dim: int = 64, images: np.ndarray | None = None,
                   foreground: np.ndarray | None = None, category: str = "") -> records.Boxes:
    """GLIP-like part boxes from ground-truth label images.

    gt: (V, H, W) int32 part index per pixel, -1 background/unlabelled. images: (V, H, W, 3)
    uint8 the rendered RGB the detector looks at (default: a grey silhouette on white);
    foreground: (V, H, W) bool the object's pixels (default ``gt >= 0``); category: names
    the confusion matrix (`confusion_model`) together with the part names.
    Returns Boxes with view (B,), xyxy (B, 4) pixel corners inside the image, part_probs
    (B, P) rows summing to 1 with the box's label highest, confidence (B,) in
    [conf_min, 0.99] and features (B, feature_dim).

    Confidence = conf_min + (0.99 - conf_min) * sigmoid(conf_bias + conf_evidence *
    evidence + conf_area * log(box area / silhouette area) + conf_noise * N(0, 1)).
    Features: the _N_OBSERVED observed properties of `_box_features`, standardised over
    the shape's boxes and scaled by feature_observed, plus N(0, 1) noise, then N(0, 1) in
    the rest (truncated when feature_dim is smaller). The label's name is not in them
    (it is in part_probs). glip-like-leaky instead scores conf_base + conf_slope * purity +
    noise and writes feature_signal * (2 purity - 1) + N(0, 1) over the first
    feature_signal_dims.
    """
    cfg = get_preset(preset)
    gt = _check_gt(gt, n_parts, part_names)
    v, h, w = gt.shape
    foreground = gt >= 0 if foreground is None else np.asarray(foreground, bool)
    if images is None:
        images = np.where(foreground[..., None], 128, BACKGROUND_RGB).astype(np.uint8)
        images = np.broadcast_to(images, (v, h, w, 3))
    if images.shape != (v, h, w, 3) or foreground.shape != gt.shape:
        raise ValueError(f"images {images.shape} / foreground {foreground.shape} do not match "
                         f"gt {gt.shape}")
    confusion = confusion_model(category, part_names, cfg)
    rate = _shape_confusion_rate(confusion, cfg, seed)
    views, xyxys, labels, evidences = [], [], [], []
    rngs = []
    for i in range(v):
        rng = _rng(seed, i, _STREAM_BOXES)
        if not np.any(gt[i] >= 0):
            continue
        b, lab, ev = _view_boxes(gt[i], foreground[i] | (gt[i] >= 0), n_parts, cfg,
                                 confusion, rate, rng)
        views.append(np.full(len(b), i, np.int32))
        xyxys.append(b)
        labels.append(lab)
        evidences.append(ev)
        rngs.append((rng, len(b)))
    view = np.concatenate(views)
    xyxy = np.concatenate(xyxys)
    label = np.concatenate(labels)
    evidence = np.concatenate(evidences)

    # Scores, drawn view by view from each view's own stream (independent per view).
    conf_noise = np.concatenate([r.normal(0.0, 1.0, n) for r, n in rngs])
    logits = np.concatenate([r.normal(0.0, 1.0, (n, n_parts)) for r, n in rngs])
    width = max(feature_dim, _N_OBSERVED)
    feat_noise = np.concatenate([r.normal(0.0, 1.0, (n, width)) for r, n in rngs])

    observed = _box_features(images, foreground, view, xyxy)
    if cfg.leaks_purity:
        purity = box_purity(gt, view, xyxy, label)
        confidence = cfg.conf_base + cfg.conf_slope * purity + cfg.conf_noise * conf_noise
    else:
        # log(0.05): a box of a twentieth of the silhouette scores conf_bias on average
        score = (cfg.conf_bias + cfg.conf_evidence * evidence + cfg.conf_noise * conf_noise
                 + cfg.conf_area * (observed[:, _LOG_AREA] - np.log(0.05)))
        confidence = cfg.conf_min + (0.99 - cfg.conf_min) / (1.0 + np.exp(-score))
    confidence = np.clip(confidence, cfg.conf_min, 0.99).astype(np.float32)

    # The chosen label leads the others by a margin that grows with confidence.
    rows = np.arange(len(label))
    others_max = np.where(np.arange(n_parts) == label[:, None], -np.inf, logits).max(axis=1)
    logits[rows, label] = np.maximum(others_max, 0.0) + cfg.prob_margin * (0.5 + confidence)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)

    # Observed properties, standardised over the shape's boxes, in unit noise.
    spread = observed.std(axis=0)
    standard = (observed - observed.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    full = feat_noise.copy()
    full[:, :_N_OBSERVED] += cfg.feature_observed * standard
    if cfg.leaks_purity:
        k = cfg.feature_signal_dims
        full[:, :k] = cfg.feature_signal * (2.0 * purity[:, None] - 1.0) + feat_noise[:, :k]
    features = np.zeros((len(label), feature_dim), np.float32)
    features[:, : min(feature_dim, full.shape[1])] = full[:, :feature_dim]

    return records.Boxes(
        view=view, xyxy=xyxy, part_probs=probs, confidence=confidence, features=features,
        part_names=list(part_names), teacher=f"simulated:{cfg.name}",
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian noise smoothed over the two leading (spatial) axes, rescaled to unit std."""
    n = rng.normal(0.0, 1.0, shape)
    if sigma <= 0:
        return n
    s = ndimage.gaussian_filter(n, sigma=(sigma, sigma) + (0,) * (len(shape) - 2))
    return s / max(float(s.std()), 1e-6)


def simulate_pixel_maps(gt: np.ndarray, n_parts: int, part_names: list[str],
                        preset: str | TeacherPreset = DEFAULT_PRESET,
                        seed: int = 0, category: str = "") -> records.PixelMaps:
    """CLIPSeg/PointCLIP-like per-pixel part probabilities from ground-truth label images.

    gt: (V, H, W) int32, -1 background. Returns PixelMaps with probs (V, H, W, P) float16 in
    [0, 1]: on labelled pixels they sum to 1; on background they sum to at most
    `pixel_spill` (probability spilled from nearby parts). Noise: whole components take
    another label (`pixel_flip_prob`; which label follows the category's systematic
    `confusion_model`), gaussian-blurred boundaries (`pixel_blur`) and smooth
    logit noise (`pixel_noise`).
    """
    cfg = get_preset(preset)
    gt = _check_gt(gt, n_parts, part_names)
    v, h, w = gt.shape
    sigma = cfg.pixel_blur * max(h, w)
    confusion = confusion_model(category, part_names, cfg)
    out = np.zeros((v, h, w, n_parts), np.float16)
    for i in range(v):
        rng = _rng(seed, i, _STREAM_PIXELS)
        fg = gt[i] >= 0
        if not fg.any():
            continue
        comps = _components(gt[i], n_parts, _gap_px(cfg, h, w))
        comp_label = comps.part.copy()
        if n_parts > 1:
            flip = rng.random(len(comp_label)) < cfg.pixel_flip_prob
            comp_label = np.where(flip, _pick(rng, confusion.target[comp_label]), comp_label)
        noisy = np.where(fg, comp_label[np.maximum(comps.label_map, 0)], -1)
        onehot = (noisy[..., None] == np.arange(n_parts)).astype(np.float32)
        # Background pixels are left out of the blur's normalisation so parts keep their
        # weight near the silhouette; occupancy tells how much object is nearby.
        if sigma > 0:
            onehot = ndimage.gaussian_filter(onehot, sigma=(sigma, sigma, 0))
            occupancy = ndimage.gaussian_filter(fg.astype(np.float32), sigma)
        else:
            occupancy = fg.astype(np.float32)
        dist = onehot / np.maximum(occupancy, 1e-6)[..., None]
        logits = cfg.pixel_sharpness * dist
        if cfg.pixel_noise > 0:
            logits = logits + cfg.pixel_noise * _smooth_noise(rng, (h, w, n_parts), sigma + 2)
        logits -= logits.max(axis=-1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=-1, keepdims=True)
        mass = np.where(fg, 1.0, np.clip(cfg.pixel_spill * occupancy, 0.0, 1.0))
        out[i] = (probs * mass[..., None]).astype(np.float16)
    return records.PixelMaps(probs=out, part_names=list(part_names),
                             teacher=f"simulated:{cfg.name}")


def simulate_masks(gt: np.ndarray, boxes: records.Boxes, seed: int = 0,
                   preset: str | TeacherPreset = DEFAULT_PRESET) -> records.Masks:
    """Oracle box -> mask refinement from ground-truth label images (`sam-refine --model
    sam-oracle`): an upper bound on what a refiner could give, not a SAM stand-in; it
    reads the ground truth, and its scores read the box's purity.

    For each box: the gap-closed region of the component (of any part: SAM ignores names)
    with the most labelled pixels inside the box, cut to the box, with smooth boundary noise
    that may overflow the box by up to 10% of its size per side; with `mask_leak_prob` it also
    swallows the runner-up region, with `mask_miss_prob` only the half of the region on one
    side of a random line through its centre is kept. An empty box region gives an empty
    mask. Returns Masks with masks (B, H, W) bool aligned with `boxes`, scores (B,) float32.
    """
    cfg = get_preset(preset)
    n_parts = max(boxes.part_probs.shape[1], int(np.max(gt)) + 1)
    gt = _check_gt(gt, n_parts)
    v, h, w = gt.shape
    masks = np.zeros((len(boxes), h, w), bool)
    scores = np.zeros(len(boxes), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in np.unique(boxes.view):
        comps = _components(gt[i], n_parts, _gap_px(cfg, h, w))
        for j, b in enumerate(np.nonzero(boxes.view == i)[0]):
            # One stream per box, so one box's outcome never shifts another's noise.
            rng = np.random.default_rng([seed, int(i), _STREAM_MASKS, j])
            x0, y0 = np.floor(boxes.xyxy[b, :2]).astype(int)
            x1, y1 = np.ceil(boxes.xyxy[b, 2:]).astype(int)
            ids = comps.label_map[y0:y1, x0:x1]
            counts = np.bincount(ids[ids >= 0], minlength=len(comps.part))
            leak, miss = rng.random(2)
            angle = rng.uniform(0, 2 * np.pi)
            if not counts.any():
                continue
            order = np.argsort(-counts, kind="stable")
            chosen = [order[0]]
            if leak < cfg.mask_leak_prob and len(order) > 1 and counts[order[1]] > 0:
                chosen.append(order[1])
            region = np.zeros((h, w), bool)
            for c in chosen:
                region |= comps.region_map[comps.part[c]] == c
            mx, my = int(np.ceil(0.1 * (x1 - x0))), int(np.ceil(0.1 * (y1 - y0)))
            cx0, cy0 = max(x0 - mx, 0), max(y0 - my, 0)
            cx1, cy1 = min(x1 + mx, w), min(y1 + my, h)
            # The region is cut to the box first, so only the boundary noise overflows it.
            crop = np.zeros((cy1 - cy0, cx1 - cx0), np.float32)
            crop[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0] = region[y0:y1, x0:x1]
            if cfg.mask_boundary > 0:
                crop = ndimage.gaussian_filter(crop, cfg.mask_boundary)
                crop = crop + 0.25 * _smooth_noise(rng, crop.shape, cfg.mask_boundary)
            m = crop > 0.5
            if miss < cfg.mask_miss_prob and m.any():
                ys, xs = np.nonzero(m)
                side = (np.cos(angle) * (xx[cy0:cy1, cx0:cx1] - xs.mean())
                        + np.sin(angle) * (yy[cy0:cy1, cx0:cx1] - ys.mean()))
                m &= side >= 0
            masks[b, cy0:cy1, cx0:cx1] = m
            purity = counts[chosen].sum() / max(counts.sum(), 1)
            # SAM's own IoU estimate: high, lower for leaks/misses and mixed boxes, noisy.
            scores[b] = np.clip(
                0.95 - 0.1 * (len(chosen) > 1) - 0.1 * (miss < cfg.mask_miss_prob)
                - 0.1 * (1 - purity) + rng.normal(0, 0.03 if cfg.mask_boundary else 0.0),
                0.0, 1.0,
            )
    return records.Masks(masks=masks, scores=scores, refiner=f"sam-oracle:{cfg.name}")

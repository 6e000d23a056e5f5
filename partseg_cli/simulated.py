"""Simulated 2D teacher: a measuring instrument, not a model.

With no vision-language model weights available, segmentation quality is measured with a
teacher that *reads the ground truth* and degrades it the way a real teacher errs: GLIP-like
part boxes (`simulate_boxes`), CLIPSeg/PointCLIP-like pixel maps (`simulate_pixel_maps`) and
SAM-like box -> mask refinement (`simulate_masks`). It therefore needs ground-truth part
labels and refuses unlabelled shapes; its numbers say how well a 3D method lifts *this kind*
of noisy 2D evidence, never how well partseg segments a new shape. Real teachers are the
product.

Input everywhere is a stack of ground-truth label images `gt (V, H, W) int32`: the part
index of the point seen at each pixel, -1 for background or unlabelled points
(`label_images`). Noise is drawn independently per view from
`np.random.default_rng([seed, view, stream])`, so results are deterministic given `seed`
and do not depend on which other views are simulated.

What a real box teacher gets wrong, and the knob that controls it (`TeacherPreset`):
- small parts are missed (`detect_max`, `detect_half_area`);
- boxes are loose and leak into neighbouring parts (`jitter`, `expand`);
- several instances of a part share one box, e.g. all chair legs (`merge_prob`);
- a box gets another part's name (`confusion_prob`);
- boxes on nothing in particular (`false_positives`) and whole-object boxes
  (`whole_object_prob`);
- confidences track box quality only loosely (`conf_*`), and so do the box embeddings
  (`feature_signal`, `feature_signal_dims`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from partseg_cli import records
from partseg_cli.errors import InputError, PartsegError

DESCRIPTION = (
    "simulated: a measuring instrument, not a model. Reads the shape's ground-truth part "
    "labels and turns them into VLM-like noisy boxes, pixel maps or masks (presets: "
    "glip-like, clean, weak) so that lifting and distillation can be scored without model "
    "weights. Needs labelled shapes and refuses unlabelled ones; use a real teacher to "
    "segment new shapes."
)

# Streams keep the random draws of the three simulators independent of each other.
_STREAM_BOXES, _STREAM_PIXELS, _STREAM_MASKS = 0, 1, 2
_N_PART_EMBED = 8  # feature dims holding a fixed per-part-name embedding


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
    confusion_prob: float  # probability that a box is given a wrong part name
    false_positives: float  # expected number of boxes on random object regions per view
    whole_object_prob: float  # probability per view of one box around the whole object
    # --- scores ----------------------------------------------------------------------
    conf_base: float  # confidence of a box whose region holds none of its part
    conf_slope: float  # confidence gained from 0 to 1 precision of the box
    conf_noise: float  # std of the confidence noise (makes right and wrong overlap)
    conf_min: float  # confidences are clipped to [conf_min, 0.99] (a detector threshold)
    prob_margin: float  # logit margin of the chosen label over the others in part_probs
    feature_signal: float  # scale of the correctness signal in the box features
    feature_signal_dims: int  # how many leading feature dims carry that signal
    # --- pixel maps --------------------------------------------------------------------
    pixel_blur: float  # gaussian sigma of the maps, fraction of image side
    pixel_flip_prob: float  # probability that a component's region takes another label
    pixel_sharpness: float  # logit scale of the clean one-hot maps before softmax
    pixel_noise: float  # std of smooth logit noise
    pixel_spill: float  # how much blurred probability spills onto background pixels
    # --- SAM-like masks ------------------------------------------------------------------
    mask_boundary: float  # std of smooth boundary noise, in pixels of blur
    mask_leak_prob: float  # probability that a mask also swallows the next region in its box
    mask_miss_prob: float  # probability that a mask keeps only part of its region


PRESETS: dict[str, TeacherPreset] = {
    # Calibrated on LabeledDB renders (10 reference views, 800 px) so that the
    # confidence-weighted 2D mIoU of the boxes (PartDistill supp. Eq. A-D) falls in GLIP's
    # measured band 0.40-0.60 (PartDistill Table 5: 42.8 airplane, 60.2 chair, 53.6 knife);
    # measured 0.39 Airplane, 0.52 Chair, 0.44 Cup, 0.53 Table, 0.47 mean. Its pixel maps
    # sit near PartDistill's CLIP figures (34.6-66.8): 0.51 mean. bench/bench_teacher.py.
    "glip-like": TeacherPreset(
        name="glip-like", detect_max=0.95, detect_half_area=0.015, component_gap=0.004,
        jitter=0.08, expand=0.12, merge_prob=0.4, confusion_prob=0.15, false_positives=0.6,
        whole_object_prob=0.15, conf_base=0.45, conf_slope=0.3, conf_noise=0.1,
        conf_min=0.3, prob_margin=2.0, feature_signal=1.0, feature_signal_dims=4,
        pixel_blur=0.01, pixel_flip_prob=0.3, pixel_sharpness=4.0, pixel_noise=1.0,
        pixel_spill=0.5, mask_boundary=2.0, mask_leak_prob=0.15, mask_miss_prob=0.1,
    ),
    # Near-perfect: every component boxed tightly with its own name. For sanity checks.
    "clean": TeacherPreset(
        name="clean", detect_max=1.0, detect_half_area=0.0, component_gap=0.004,
        jitter=0.0, expand=0.0, merge_prob=0.0, confusion_prob=0.0, false_positives=0.0,
        whole_object_prob=0.0, conf_base=0.9, conf_slope=0.09, conf_noise=0.0,
        conf_min=0.3, prob_margin=6.0, feature_signal=3.0, feature_signal_dims=4,
        pixel_blur=0.0, pixel_flip_prob=0.0, pixel_sharpness=8.0, pixel_noise=0.0,
        pixel_spill=0.0, mask_boundary=0.0, mask_leak_prob=0.0, mask_miss_prob=0.0,
    ),
    # Worse than GLIP: many misses and confusions, weakly informative scores.
    "weak": TeacherPreset(
        name="weak", detect_max=0.8, detect_half_area=0.04, component_gap=0.004,
        jitter=0.15, expand=0.25, merge_prob=0.6, confusion_prob=0.3, false_positives=1.5,
        whole_object_prob=0.3, conf_base=0.45, conf_slope=0.15, conf_noise=0.12,
        conf_min=0.3, prob_margin=1.0, feature_signal=0.4, feature_signal_dims=4,
        pixel_blur=0.02, pixel_flip_prob=0.35, pixel_sharpness=3.0, pixel_noise=1.5,
        pixel_spill=0.8, mask_boundary=4.0, mask_leak_prob=0.3, mask_miss_prob=0.2,
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


def _label_fraction(gt_view: np.ndarray, xyxy: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(B,) fraction of the labelled pixels inside each box that carry the box's label."""
    out = np.zeros(len(xyxy), np.float32)
    for i, (box, lab) in enumerate(zip(xyxy, labels, strict=True)):
        (x0, y0), (x1, y1) = np.floor(box[:2]).astype(int), np.ceil(box[2:]).astype(int)
        crop = gt_view[y0:y1, x0:x1]
        fg = np.count_nonzero(crop >= 0)
        out[i] = np.count_nonzero(crop == lab) / fg if fg else 0.0
    return out


def _part_embedding(name: str, dim: int) -> np.ndarray:
    """A fixed unit vector per part name, the same for every shape and seed."""
    v = np.random.default_rng(zlib.crc32(name.encode())).normal(size=dim)
    return v / np.linalg.norm(v)


def _view_boxes(gt_view: np.ndarray, n_parts: int, preset: TeacherPreset,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy boxes of one view: (B, 4) float32 XYXY, (B,) int32 label, (B,) int32 true part
    (-1 for false-positive and whole-object boxes)."""
    h, w = gt_view.shape
    comps = _components(gt_view, n_parts, _gap_px(preset, h, w))
    fg_area = max(int(np.count_nonzero(gt_view >= 0)), 1)
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

    # Loose boxes: each side moves by a jitter and grows outwards (semantic leaking).
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    outward = np.array([-1.0, -1.0, 1.0, 1.0])
    grow = rng.exponential(preset.expand, boxes.shape) if preset.expand > 0 else 0.0
    shift = rng.normal(0.0, 1.0, boxes.shape) * preset.jitter
    boxes = boxes + size * (outward * grow + shift)

    labels = truth.copy()
    if n_parts > 1:
        confused = rng.random(len(labels)) < preset.confusion_prob
        other = (labels + rng.integers(1, n_parts, len(labels))) % n_parts
        labels = np.where(confused, other, labels).astype(np.int32)

    ys, xs = np.nonzero(gt_view >= 0)
    obj = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    obj_size = np.concatenate([obj[2:] - obj[:2]] * 2)
    extra_boxes, extra_labels = [], []
    n_fp = rng.poisson(preset.false_positives)
    if n_fp:
        # Anchored on random object pixels, sized like a part of the object.
        centre = rng.integers(0, len(xs), n_fp)
        half = rng.uniform(0.05, 0.3, (n_fp, 2)) * obj_size[:2]
        c = np.stack([xs[centre], ys[centre]], axis=1).astype(np.float32)
        extra_boxes.append(np.concatenate([c - half, c + half], axis=1))
        extra_labels.append(rng.integers(0, n_parts, n_fp))
    if rng.random() < preset.whole_object_prob:
        extra_boxes.append((obj + obj_size * rng.uniform(0.0, 0.03, 4) * outward)[None])
        extra_labels.append(rng.integers(0, n_parts, 1))
    if extra_boxes:
        e = np.concatenate(extra_boxes)
        boxes = np.concatenate([boxes, e])
        labels = np.concatenate([labels, *extra_labels]).astype(np.int32)
        truth = np.concatenate([truth, np.full(len(e), -1, np.int32)])

    boxes = np.clip(boxes, 0.0, [w, h, w, h]).astype(np.float32)
    # Keep at least one pixel per box after clipping.
    boxes[:, 2:] = np.maximum(boxes[:, 2:], np.minimum(boxes[:, :2] + 1.0, [w, h]))
    boxes[:, :2] = np.minimum(boxes[:, :2], boxes[:, 2:] - 1.0)
    return boxes, labels.astype(np.int32), truth


def simulate_boxes(gt: np.ndarray, n_parts: int, part_names: list[str],
                   preset: str | TeacherPreset = DEFAULT_PRESET, seed: int = 0,
                   feature_dim: int = 64) -> records.Boxes:
    """GLIP-like part boxes from ground-truth label images.

    gt: (V, H, W) int32 part index per pixel, -1 background/unlabelled.
    Returns Boxes with view (B,), xyxy (B, 4) pixel corners inside the image, part_probs
    (B, P) rows summing to 1 with the box's label highest, confidence (B,) in
    [conf_min, 0.99] and features (B, feature_dim).

    Quality of a box = fraction of the labelled pixels inside it that carry its label.
    Confidence = conf_base + conf_slope * quality + noise, so it is informative but right
    and wrong boxes overlap. Feature layout: `feature_signal_dims` dims of
    feature_signal * (2 quality - 1) + N(0, 1); 4 dims of box geometry (centre, size as
    fractions of the image); 8 dims of a fixed embedding of the label's name; N(0, 1) in
    the rest (truncated when feature_dim is smaller).
    """
    cfg = get_preset(preset)
    gt = _check_gt(gt, n_parts, part_names)
    v, h, w = gt.shape
    views, xyxys, labels, quality = [], [], [], []
    rngs = []
    for i in range(v):
        rng = _rng(seed, i, _STREAM_BOXES)
        if not np.any(gt[i] >= 0):
            continue
        b, lab, _ = _view_boxes(gt[i], n_parts, cfg, rng)
        views.append(np.full(len(b), i, np.int32))
        xyxys.append(b)
        labels.append(lab)
        quality.append(_label_fraction(gt[i], b, lab))
        rngs.append((rng, len(b)))
    view = np.concatenate(views)
    xyxy = np.concatenate(xyxys)
    label = np.concatenate(labels)
    q = np.concatenate(quality)

    # Scores, drawn view by view from each view's own stream (independent per view).
    conf_noise = np.concatenate([r.normal(0.0, 1.0, n) for r, n in rngs])
    logits = np.concatenate([r.normal(0.0, 1.0, (n, n_parts)) for r, n in rngs])
    k = cfg.feature_signal_dims
    width = max(feature_dim, k + 4 + _N_PART_EMBED)
    feat_noise = np.concatenate([r.normal(0.0, 1.0, (n, width)) for r, n in rngs])

    confidence = np.clip(cfg.conf_base + cfg.conf_slope * q + cfg.conf_noise * conf_noise,
                         cfg.conf_min, 0.99).astype(np.float32)

    # The chosen label leads the others by a margin that grows with confidence.
    rows = np.arange(len(label))
    others_max = np.where(np.arange(n_parts) == label[:, None], -np.inf, logits).max(axis=1)
    logits[rows, label] = np.maximum(others_max, 0.0) + cfg.prob_margin * (0.5 + confidence)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)

    signal = cfg.feature_signal * (2.0 * q[:, None] - 1.0) + feat_noise[:, :k]
    centre = (xyxy[:, :2] + xyxy[:, 2:]) / 2 / [w, h]
    extent = (xyxy[:, 2:] - xyxy[:, :2]) / [w, h]
    embed = np.stack([_part_embedding(part_names[p], _N_PART_EMBED) for p in range(n_parts)])
    full = np.concatenate(
        [signal, centre, extent, embed[label], feat_noise[:, k + 4 + _N_PART_EMBED:]], axis=1
    )
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
                        seed: int = 0) -> records.PixelMaps:
    """CLIPSeg/PointCLIP-like per-pixel part probabilities from ground-truth label images.

    gt: (V, H, W) int32, -1 background. Returns PixelMaps with probs (V, H, W, P) float16 in
    [0, 1]: on labelled pixels they sum to 1; on background they sum to at most
    `pixel_spill` (probability spilled from nearby parts). Noise: whole components take
    another label (`pixel_flip_prob`), gaussian-blurred boundaries (`pixel_blur`) and smooth
    logit noise (`pixel_noise`).
    """
    cfg = get_preset(preset)
    gt = _check_gt(gt, n_parts, part_names)
    v, h, w = gt.shape
    sigma = cfg.pixel_blur * max(h, w)
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
            other = (comp_label + rng.integers(1, n_parts, len(comp_label))) % n_parts
            comp_label = np.where(flip, other, comp_label)
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
    """SAM-like box -> mask refinement from ground-truth label images.

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
    return records.Masks(masks=masks, scores=scores, refiner=f"simulated:{cfg.name}")

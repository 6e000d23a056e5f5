"""PartSTAD (Kim & Sung, ECCV 2024): few-shot task adaptation of 2D-to-3D lifting.

A small network (`models.partstad.BoxWeightNet`) weighs every 2D box (or the SAM mask
refined from it) for the 3D task, trained per category on a few labelled shapes with a
relaxed 3D mIoU loss; the weighted voting then labels any shape.

Eq. 5, for superpoint i, part j and unit (box / mask) weights W(b):
    s~_ij = sum_k sum_{p in P_i} V_k(p) max_{b in B_jk} I_b(p) W(b)  /  sum_k sum_{p in P_i} V_k(p)
Eq. 6: softmax over [null, parts] with the null score relu(s0) learnable.
Eq. 2-4: loss = mean over non-null parts of 1 - relaxed IoU, the point-level IoU of the
superpoints' probabilities (each superpoint weighted by its point count).

Visibility V_k and membership I_b are the `backproject` stage's (its stored knowledge
units: `visible_points`, box and mask units, whole-object boxes dropped), so PartSTAD
with every weight 1 and a 0.5 threshold on s~ is exactly `vote`. Inference follows the
reference code: a superpoint takes the part with the highest probability when that is
>= 0.5 (with PartSLIP's small-part rule, `vote.vote_semantic`); superpoints that no unit
covers are unlabelled. Instances come from PartSLIP's merging (`vote.vote_instances`)
with each unit's fractions scaled by its learned weight.

Deviations from the paper, each an option with the paper's value reachable:
`--loss ce` (the supplementary's cross-entropy ablation), `--weights confidence` (the
detector's confidence x the offset as the weight, only the null score learned).
The reference keeps the checkpoint that scores best on 8 validation shapes; partseg
trains a fixed schedule and keeps the last state (no shape outside the training set
is looked at).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelError, PartsegError, StoreError
from ..pipeline import StageReport, collection_key, progress, run_per_shape, select_shapes
from ..records import (
    Boxes,
    Cameras,
    KnowledgeUnits,
    Labelling,
    Shape,
    Superpoints,
    from_arrays,
)
from ..store import Workspace, shape_scope
from . import AdaptConfig, method_config

if TYPE_CHECKING:
    import torch

    from ..models.partstad import BoxWeightNet

METHOD = "partstad"
KIND = "partstad"  # saved_model kind
INPUTS = ["shape", "render", "detect", "superpoints", "backproject"]
LOSSES = ("mriou", "ce")
WEIGHTINGS = ("learned", "confidence")


@dataclass
class PartstadConfig:
    """Everything PartSTAD trains and labels with (paper values as defaults)."""

    epochs: int = 400
    lr: float = 1e-4  # AdamW, the weight network
    null_lr: float = 5e-2  # AdamW, the null score
    batch_size: int = 2  # shapes per step
    loss: str = "mriou"  # mriou (Eq. 3) or ce (cross-entropy, supplementary ablation)
    weights: str = "learned"  # learned (Sec. 4.2) or confidence (supplementary ablation)
    n_frequencies: int = 10  # positional encoding of view direction and box corners
    offset: float = 10.0  # tau of Eq. 7
    null_init: float = 10.0
    threshold: float = 0.5  # inference: a superpoint needs this probability for a part
    instances: bool = True
    seed: int = 0
    device: str = "cpu"

    def train_params(self) -> dict[str, Any]:
        """What changes the trained network (not the device, not inference options)."""
        keep = ("epochs", "lr", "null_lr", "batch_size", "loss", "weights", "n_frequencies",
                "offset", "null_init", "seed")
        return {name: getattr(self, name) for name in keep}


def config_from(common: AdaptConfig) -> PartstadConfig:
    """PartSTAD's settings from `partseg adapt`'s options."""
    config = method_config(PartstadConfig, common, METHOD)
    if config.loss not in LOSSES:
        raise PartsegError(f"--loss: choose {' or '.join(LOSSES)}, not {config.loss!r}")
    if config.weights not in WEIGHTINGS:
        raise PartsegError(f"--weights: choose {' or '.join(WEIGHTINGS)}, "
                           f"not {config.weights!r}")
    if config.epochs < 0 or config.batch_size < 1:
        raise PartsegError("--epochs must be >= 0 and --batch-size >= 1")
    return config


# --- the math (pure functions on tensors) ------------------------------------------


@dataclass
class LiftPlan:
    """Eq. 5 for one shape, precomputed: every (unit, visible point inside it) pair, the
    (view, part, point) group it competes in for the max, and the (part, superpoint)
    cell each group adds to."""

    pair_unit: torch.Tensor  # (E,) int64 unit of each pair
    pair_group: torch.Tensor  # (E,) int64 group in [0, G)
    group_cell: torch.Tensor  # (G,) int64 part * K + superpoint
    seen: torch.Tensor  # (K,) float32 visible (view, point) count of each superpoint
    covered: torch.Tensor  # (K,) bool: some unit covers a visible point of it
    n_parts: int
    n_superpoints: int


def lift_plan(units: KnowledgeUnits, visible: np.ndarray, superpoints: np.ndarray,
              n_parts: int, device: str = "cpu") -> LiftPlan:
    """The `LiftPlan` of units (masks (U, N), labels < n_parts, view), visible (V, N)
    bool and superpoints (N,) int in [0, K)."""
    import torch

    n_points = visible.shape[1]
    n_sp = int(superpoints.max()) + 1 if superpoints.size else 0
    if len(units) and int(units.labels.max()) >= n_parts:
        raise ValueError(f"unit label {int(units.labels.max())} but only {n_parts} parts")
    unit, point = np.nonzero(units.masks & visible[units.view])
    group_key = ((units.view[unit].astype(np.int64) * n_parts + units.labels[unit])
                 * n_points + point)
    groups, pair_group = np.unique(group_key, return_inverse=True)
    group_part = (groups // n_points) % n_parts
    group_cell = group_part * n_sp + superpoints[groups % n_points]
    seen = np.bincount(superpoints, weights=visible.sum(axis=0), minlength=n_sp)
    covered = np.zeros(n_sp, bool)
    covered[superpoints[groups % n_points]] = True

    def tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

    return LiftPlan(tensor(unit, torch.int64), tensor(pair_group.ravel(), torch.int64),
                    tensor(group_cell, torch.int64), tensor(seen, torch.float32),
                    tensor(covered & (seen > 0), torch.bool), n_parts, n_sp)


def lift_scores(plan: LiftPlan, unit_weights: torch.Tensor) -> torch.Tensor:
    """Eq. 5: s~ (P, K) from unit weights (U,) >= 0; 0 for superpoints never seen.
    With every weight 1 this is PartSLIP's voting score (`vote.vote_scores`)."""
    import torch

    values = unit_weights[plan.pair_unit]
    n_groups = plan.group_cell.shape[0]
    group_max = values.new_zeros(n_groups).scatter_reduce(
        0, plan.pair_group, values, reduce="amax", include_self=False)
    cells = values.new_zeros(plan.n_parts * plan.n_superpoints).index_add(
        0, plan.group_cell, group_max)
    return cells.reshape(plan.n_parts, plan.n_superpoints) / torch.clamp(plan.seen, min=1.0)


def part_logits(scores: torch.Tensor, null_score: torch.Tensor) -> torch.Tensor:
    """(K, 1 + P) logits of Eq. 6: column 0 the null score, then s~ transposed."""
    import torch

    return torch.cat([null_score.expand(scores.shape[1], 1), scores.T], dim=1)


def relaxed_iou(probs: torch.Tensor, gt_fraction: torch.Tensor, sizes: torch.Tensor
                ) -> torch.Tensor:
    """Relaxed IoU per part (Eq. 2 with soft predictions, Eq. 4 through superpoints).

    probs: (K, P) predicted probabilities of each superpoint; gt_fraction: (K, P) the
    fraction of its points labelled with each part; sizes: (K,) its point count.
    Returns (P,): sum(l l^) / (|l| + |l^| - sum(l l^)), 0 where both are empty.
    """
    import torch

    weighted = sizes[:, None]
    inter = (weighted * gt_fraction * probs).sum(dim=0)
    union = (weighted * gt_fraction).sum(dim=0) + (weighted * probs).sum(dim=0) - inter
    return torch.where(union > 0, inter / torch.clamp(union, min=1e-12),
                       torch.zeros_like(union))


def mriou_loss(logits: torch.Tensor, gt_fraction: torch.Tensor, sizes: torch.Tensor
               ) -> torch.Tensor:
    """Eq. 3: 1 - mean relaxed IoU over the non-null parts. logits (K, 1 + P)."""
    probs = logits.softmax(dim=1)[:, 1:]
    return 1.0 - relaxed_iou(probs, gt_fraction, sizes).mean()


def cross_entropy_loss(logits: torch.Tensor, gt_fraction: torch.Tensor, sizes: torch.Tensor
                       ) -> torch.Tensor:
    """Point-level cross-entropy through superpoints: each superpoint's log-probability
    of every label (null for unlabelled points) weighted by how many of its points
    carry it, over all points. logits (K, 1 + P); gt_fraction (K, P)."""
    import torch

    null = (1.0 - gt_fraction.sum(dim=1, keepdim=True)).clamp(min=0.0)
    target = sizes[:, None] * torch.cat([null, gt_fraction], dim=1)
    return -(target * logits.log_softmax(dim=1)).sum() / sizes.sum().clamp(min=1.0)


# --- one shape's inputs ----------------------------------------------------------------


@dataclass
class ShapeInputs:
    """What PartSTAD reads of one shape, as tensors where the training needs them."""

    shape_id: str
    features: torch.Tensor  # (B, D) float32 the detector's box features
    geometry: torch.Tensor  # (B, 7) float32 view direction + box corners / image size
    confidence: torch.Tensor  # (B,) float32 the detector's confidence
    unit_box: torch.Tensor  # (U,) int64 box each unit comes from
    plan: LiftPlan
    part_names: list[str]
    teacher: str
    gt_fraction: torch.Tensor | None = None  # (K, P) float32, training shapes only
    sizes: torch.Tensor | None = None  # (K,) float32 points per superpoint


def box_geometry(boxes: Boxes, cameras: Cameras) -> np.ndarray:
    """(B, 7) float32: each box's view direction (the camera's forward axis in the shape
    frame) and its corners x0, y0, x1, y1 divided by the image width / height."""
    forward = np.asarray(cameras.extrinsics, np.float64)[:, 2, :3]  # R^T e_z, per view
    forward /= np.maximum(np.linalg.norm(forward, axis=1, keepdims=True), 1e-12)
    size = np.array([cameras.width, cameras.height] * 2, np.float64)
    corners = np.asarray(boxes.xyxy, np.float64).reshape(-1, 4) / size
    return np.concatenate([forward[boxes.view], corners], axis=1).astype(np.float32)


def teacher_part_names(workspace: Workspace, shape_id: str) -> list[str]:
    """The part names the teacher was asked for: the label space of the units."""
    artifact = workspace.read(shape_scope(shape_id), "detect", names=[])
    return list(artifact.record_attrs.get("part_names", []))


def _gt_in(names: list[str], shape: Shape) -> np.ndarray:
    """(N,) int64 ground truth re-indexed into ``names``; parts not asked for -> -1."""
    index = {name: i for i, name in enumerate(names)}
    lookup = np.array([index.get(name, -1) for name in shape.part_names] + [-1], np.int64)
    return lookup[np.asarray(shape.point_labels, np.int64)]


def gt_fractions(point_labels: np.ndarray, superpoints: np.ndarray, n_parts: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(K, P) fraction of each superpoint's points labelled with each part (unlabelled
    points count for none) and (K,) its point count."""
    n_sp = int(superpoints.max()) + 1 if superpoints.size else 0
    labelled = point_labels >= 0
    counts = np.bincount(superpoints[labelled] * n_parts + point_labels[labelled],
                         minlength=n_sp * n_parts).reshape(n_sp, n_parts)
    sizes = np.bincount(superpoints, minlength=n_sp).astype(np.float64)
    return counts / np.maximum(sizes, 1)[:, None], sizes


def read_boxes(workspace: Workspace, shape_id: str) -> Boxes:
    """The shape's detections, refused in one line unless they are boxes with features."""
    from ..backproject import teacher_output

    teacher = teacher_output(workspace, shape_scope(shape_id))
    if not isinstance(teacher, Boxes):
        raise StoreError(f"{shape_id}: the stored detections are pixel maps; PartSTAD weighs "
                         "boxes (use a box teacher: owlv2, owlvit, grounding-dino, ...)")
    features = np.asarray(teacher.features)
    if features.ndim != 2 or features.shape[1] == 0 or len(features) != len(teacher):
        raise StoreError(f"{shape_id}: teacher {teacher.teacher or '?'!r} stored no box "
                         "features; PartSTAD needs the detector's per-box features")
    return teacher


def shape_inputs(workspace: Workspace, shape_id: str, device: str = "cpu",
                 with_truth: bool = False) -> tuple[ShapeInputs, dict[str, Any]]:
    """One shape's `ShapeInputs`, and the raw records apply needs (shape, units, boxes,
    visible, superpoints, pixel_point)."""
    import torch

    from ..backproject import read_units, visible_points

    scope = shape_scope(shape_id)
    boxes = read_boxes(workspace, shape_id)
    shape = workspace.read_record(scope, "shape", Shape)
    # Only the pixel map and the cameras: the images stay on disk.
    render = workspace.read(scope, "render", names=["pixel_point", "cameras/intrinsics",
                                                    "cameras/extrinsics"])
    pixel_point = render.arrays["pixel_point"]
    cameras = from_arrays(Cameras, render.arrays, render.record_attrs, prefix="cameras/")
    units = read_units(workspace, shape_id)
    if units.source not in ("boxes", "masks"):
        raise StoreError(f"{shape_id}: the knowledge units come from {units.source or '?'}; "
                         "PartSTAD weighs box or mask units (`partseg backproject "
                         "--source boxes|masks`)")
    superpoints = workspace.read_record(scope, "superpoints", Superpoints).labels
    part_names = list(boxes.part_names) or list(shape.part_names)
    visible = visible_points(pixel_point, shape.n_points)
    plan = lift_plan(units, visible, superpoints, len(part_names), device)

    def tensor(a: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

    inputs = ShapeInputs(shape_id, tensor(boxes.features), tensor(box_geometry(boxes, cameras)),
                         tensor(boxes.confidence), tensor(units.source_index, torch.int64),
                         plan, part_names, boxes.teacher)
    if with_truth:
        if shape.point_labels is None:
            raise StoreError(f"{shape_id}: a training shape needs ground-truth part labels "
                             "and this one has none")
        fraction, sizes = gt_fractions(_gt_in(part_names, shape), superpoints,
                                       len(part_names))
        inputs.gt_fraction, inputs.sizes = tensor(fraction), tensor(sizes)
    raw = {"shape": shape, "units": units, "boxes": boxes, "visible": visible,
           "superpoints": superpoints, "pixel_point": pixel_point}
    return inputs, raw


# --- the network over a shape ---------------------------------------------------------


def unit_weights(net: BoxWeightNet, inputs: ShapeInputs, weighting: str) -> torch.Tensor:
    """(U,) weight of every unit: the network's weight of its box (all boxes of the shape
    pass through the network together), or offset x the detector's confidence."""
    if weighting == "confidence":
        box_weights = net.offset * inputs.confidence
    else:
        box_weights = net(inputs.features, inputs.geometry)
    return box_weights[inputs.unit_box]


def shape_logits(net: BoxWeightNet, inputs: ShapeInputs, weighting: str) -> torch.Tensor:
    """(K, 1 + P) logits of Eq. 6 for one shape."""
    return part_logits(lift_scores(inputs.plan, unit_weights(net, inputs, weighting)),
                       net.null())


def shape_loss(net: BoxWeightNet, inputs: ShapeInputs, config: PartstadConfig
               ) -> torch.Tensor:
    """The training loss of one labelled shape over the superpoints some unit covers
    (the reference's "valid" superpoints; the others are unlabelled by construction)."""
    logits = shape_logits(net, inputs, config.weights)
    valid = inputs.plan.covered
    loss = mriou_loss if config.loss == "mriou" else cross_entropy_loss
    return loss(logits[valid], inputs.gt_fraction[valid], inputs.sizes[valid])


def new_network(feature_dim: int, config: PartstadConfig) -> BoxWeightNet:
    import torch

    from ..models.partstad import BoxWeightNet

    torch.manual_seed(config.seed)
    return BoxWeightNet(feature_dim, n_frequencies=config.n_frequencies,
                        offset=config.offset, null_init=config.null_init)


def train(items: list[ShapeInputs], config: PartstadConfig) -> tuple[BoxWeightNet, list[float]]:
    """Train the weight network on labelled shapes (AdamW: ``lr`` for the network,
    ``null_lr`` for the null score; ``batch_size`` shapes per step, shuffled each epoch
    with ``seed``). Returns the network in its last state and the mean loss per epoch."""
    import torch

    net = new_network(int(items[0].features.shape[1]), config).to(config.device)
    network_params = [p for name, p in net.named_parameters() if name != "null_score"]
    optimisers = [torch.optim.AdamW([net.null_score], lr=config.null_lr)]
    if config.weights == "learned":
        optimisers.append(torch.optim.AdamW(network_params, lr=config.lr))
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    net.train()
    threads = torch.get_num_threads()
    # The tensors are tiny (tens of boxes, thousands of pairs): one thread is several
    # times faster than two that synchronise on every op.
    torch.set_num_threads(1)
    try:
        _epochs(net, items, config, optimisers, generator, losses)
    finally:
        torch.set_num_threads(threads)
    net.eval()
    return net, losses


def _epochs(net: BoxWeightNet, items: list[ShapeInputs], config: PartstadConfig,
            optimisers: list[Any], generator: torch.Generator, losses: list[float]) -> None:
    import torch

    for _ in progress(range(config.epochs), desc="partstad train", total=config.epochs):
        order = torch.randperm(len(items), generator=generator).tolist()
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = [items[i] for i in order[start:start + config.batch_size]]
            loss = torch.stack([shape_loss(net, item, config) for item in batch]).mean()
            for optimiser in optimisers:
                optimiser.zero_grad()
            loss.backward()
            for optimiser in optimisers:
                optimiser.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(items))


def label_shape(net: BoxWeightNet, inputs: ShapeInputs, raw: dict[str, Any],
                config: PartstadConfig, training_shape: bool = False) -> Labelling:
    """PartSTAD's labelling of one shape: semantic labels (probability >= threshold,
    small-part rule), instances (PartSLIP merging with the learned weights) and, for
    meshes, face labels from the 5 nearest points."""
    import torch

    from ..backproject import face_labels_from_points
    from ..vote import vote_instances, vote_semantic

    with torch.no_grad():
        weights = unit_weights(net, inputs, config.weights)
        probs = shape_logits(net, inputs, config.weights).softmax(dim=1)[:, 1:]
        probs = torch.where(inputs.plan.covered[:, None], probs, torch.zeros_like(probs))
    scores = probs.T.cpu().numpy().astype(np.float64)  # (P, K)
    superpoints, shape = raw["superpoints"], raw["shape"]
    semantic = vote_semantic(scores, superpoints, inputs.part_names, config.threshold)
    point_instances = instance_scores = None
    if config.instances:
        point_instances, _, instance_scores = vote_instances(
            raw["units"], raw["boxes"], raw["visible"], superpoints, shape.points,
            raw["pixel_point"], semantic, scores=scores,
            unit_weights=weights.cpu().numpy())
    face_labels = None
    if shape.mesh is not None and len(shape.mesh.faces):
        face_labels = face_labels_from_points(shape.points, semantic, shape.mesh.vertices,
                                              shape.mesh.faces)
    return Labelling(point_labels=semantic,
                     point_probs=scores[:, superpoints].T.astype(np.float32),
                     point_instances=point_instances, instance_scores=instance_scores,
                     face_labels=face_labels, part_names=list(inputs.part_names),
                     method=METHOD, training_shape=training_shape)


# --- saving and loading ---------------------------------------------------------------


def save(path: Any, net: BoxWeightNet, key: str, config: PartstadConfig,
         items: list[ShapeInputs], shape_keys: dict[str, str], losses: list[float],
         seconds: float) -> None:
    from ..saved_model import save_model

    meta = {"config": config.train_params(), "part_names": items[0].part_names,
            "teacher": items[0].teacher, "feature_dim": int(items[0].features.shape[1]),
            "training_shapes": shape_keys, "final_loss": losses[-1] if losses else None,
            "train_seconds": round(seconds, 2)}
    save_model(path, kind=KIND, key=key, meta=meta, state_dict=net.state_dict())


def load(path: Any, device: str = "cpu") -> tuple[BoxWeightNet, PartstadConfig, dict[str, Any]]:
    """A saved PartSTAD network; one-line ModelError for a missing, foreign or corrupt one."""
    from ..errors import state_dict_mismatch
    from ..saved_model import load_model

    saved = load_model(path, kind=KIND, device=device)
    meta = saved.meta
    try:
        config = PartstadConfig(**meta["config"], device=device)
        net = new_network(int(meta["feature_dim"]), config).to(device)
        names = list(meta["part_names"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: incomplete PartSTAD model metadata ({exc})") from None
    problem = state_dict_mismatch(net.state_dict(), saved.state_dict)
    if problem:
        raise ModelError(f"{path}: weights do not fit a PartSTAD network ({problem})")
    net.load_state_dict(saved.state_dict)
    net.eval()
    return net, config, {**meta, "part_names": names, "key": saved.key}


# --- the stage ------------------------------------------------------------------------


def _check_compatible(workspace: Workspace, shape_ids: list[str], part_names: list[str],
                      feature_dim: int, model: str) -> None:
    """Refuse (one line) shapes whose teacher asked for other parts, or whose box
    features do not fit the network."""
    for shape_id in shape_ids:
        names = teacher_part_names(workspace, shape_id)
        if names != part_names:
            raise PartsegError(f"{shape_id}: its teacher's parts {names} differ from the "
                               f"network's {part_names} ({model})")
        # Only the features array: this check runs over every shape before any is labelled.
        features = workspace.read(shape_scope(shape_id), "detect", names=["features"]
                                  ).arrays.get("features")
        if features is None or features.ndim != 2 or features.shape[1] == 0:
            read_boxes(workspace, shape_id)  # names the problem (pixel maps, no features)
        dim = features.shape[1]
        if dim != feature_dim:
            raise PartsegError(f"{shape_id}: box features of {dim} dims, the network "
                               f"({model}) takes {feature_dim}; use the teacher it was "
                               "trained with")


def _train_or_reuse(workspace: Workspace, train_ids: list[str], config: PartstadConfig,
                    model_name: str, force: bool) -> tuple[Any, dict[str, Any], StageReport]:
    """The network trained on ``train_ids`` at ``model_name``: loaded when one with the
    same key is there already, trained and saved otherwise."""
    from ..saved_model import is_model_folder, resolve_model_path

    path = resolve_model_path(model_name, workspace.root)
    key = collection_key(workspace, "partstad", train_ids, config.train_params(), INPUTS)
    report = StageReport("partstad train")
    if not force and is_model_folder(path):
        try:
            net, _, meta = load(path, config.device)
            if meta["key"] == key:
                report.skipped = list(train_ids)
                return net, meta, report
        except ModelError:
            pass  # an unreadable older model there is replaced by the one trained now
    items = [shape_inputs(workspace, sid, config.device, with_truth=True)[0]
             for sid in train_ids]
    names = {tuple(item.part_names) for item in items}
    if len(names) > 1:
        raise PartsegError(f"training shapes were detected with different part lists "
                           f"{sorted(names)}; train one network per category")
    dims = {int(item.features.shape[1]) for item in items}
    if len(dims) > 1:
        raise PartsegError(f"training shapes hold box features of {sorted(dims)} dims; "
                           "detect them all with one teacher")
    start = time.perf_counter()
    net, losses = train(items, config)
    seconds = time.perf_counter() - start
    shape_keys = {sid: workspace.key(shape_scope(sid), "shape") or "" for sid in train_ids}
    save(path, net, key, config, items, shape_keys, losses, seconds)
    report.computed = list(train_ids)
    meta = {"part_names": items[0].part_names, "feature_dim": int(items[0].features.shape[1]),
            "training_shapes": shape_keys, "key": key}
    return net, meta, report


def run(workspace: Workspace, shape_ids: list[str], common: AdaptConfig,
        force: bool = False) -> list[StageReport]:
    """Train on ``common.train_ids`` (saving ``common.model_name``) or load
    ``common.apply``, then store a PartSTAD labelling of every shape in ``shape_ids``
    (and of the training shapes, marked ``training_shape``) as "partstad"."""
    from ..saved_model import resolve_model_path

    config = config_from(common)
    reports = []
    if common.train_ids:
        if common.apply:
            raise PartsegError("give --train-ids (train) or --apply (use a saved network), "
                               "not both")
        if not common.model_name:
            raise PartsegError("--train-ids needs --model-name NAME: where to save the "
                               "trained network")
        train_ids = select_shapes(workspace, common.train_ids)
        net, meta, report = _train_or_reuse(workspace, train_ids, config, common.model_name,
                                            force)
        reports.append(report)
        model = str(resolve_model_path(common.model_name, workspace.root))
        shape_ids = sorted(set(shape_ids) | set(train_ids))
    elif common.apply:
        model = str(resolve_model_path(common.apply, workspace.root))
        net, trained, meta = load(model, config.device)
        # Inference options come from this run; what the network learned with, from it.
        config = PartstadConfig(**{**asdict(trained), "threshold": config.threshold,
                                   "instances": config.instances, "device": config.device})
    else:
        raise PartsegError("give --train-ids PATTERN --model-name NAME to train PartSTAD, "
                           "or --apply NAME|PATH to label shapes with a trained network")
    _check_compatible(workspace, shape_ids, list(meta["part_names"]), int(meta["feature_dim"]),
                      model)
    training_keys = set(meta["training_shapes"].values())

    def compute(shape_id: str) -> Labelling:
        inputs, raw = shape_inputs(workspace, shape_id, config.device)
        is_training = workspace.key(shape_scope(shape_id), "shape") in training_keys
        return label_shape(net, inputs, raw, config, training_shape=is_training)

    params = {"model": meta["key"], "weights": config.weights,
              "threshold": config.threshold, "instances": config.instances}
    reports.append(run_per_shape(workspace, METHOD, shape_ids, params, INPUTS, compute, force))
    return reports

"""PartSLIP voting: superpoint labels and instances from lifted 2D boxes (the baseline).

Semantic: S[j, k] = over all views, the visible points of superpoint k inside any unit
(box / mask) of part j, divided by the visible points of k; k takes argmax_j S when it
is >= 0.5, a small part wins whenever its own score passes, else k is unlabelled.
Instances: adjacent superpoints of one part whose per-box "fraction inside" vectors
agree are merged (union-find), and an instance survives only if its 2D box matches a
predicted box of its part in some view.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from .backproject import face_labels_from_points, teacher_output, visible_points
from .errors import StoreError
from .pipeline import StageReport, run_per_shape
from .records import Boxes, KnowledgeUnits, Labelling, Mesh, Shape, Superpoints
from .store import Workspace, shape_scope
from .superpoints import superpoint_adjacency

if TYPE_CHECKING:
    from scipy import sparse

SMALL_PARTS = ("handle", "button", "wheel", "knob", "switch", "bulb", "shaft", "touchpad",
               "camera", "screw")


def vote_scores(units: KnowledgeUnits, visible: np.ndarray, superpoints: np.ndarray,
                n_parts: int) -> np.ndarray:
    """PartSLIP voting scores.

    units: K_u knowledge units (masks (K_u, N) bool, labels in [0, n_parts), view);
    visible: (V, N) bool; superpoints: (N,) int superpoint id in [0, K).
    Returns S (n_parts, K) float64 in [0, 1]; 0 for superpoints never visible.
    """
    n_views, n_points = visible.shape
    n_sp = int(superpoints.max()) + 1 if superpoints.size else 0
    covered = np.zeros((n_views * n_parts, n_points), bool)
    if len(units) and int(units.labels.max()) >= n_parts:
        raise ValueError(f"unit label {int(units.labels.max())} but only {n_parts} parts")
    if len(units):
        # OR the masks of all units sharing (view, part): a point inside two boxes of
        # one part in one view still counts once.
        group = units.view.astype(np.int64) * n_parts + units.labels
        order = np.argsort(group, kind="stable")
        groups, starts = np.unique(group[order], return_index=True)
        covered[groups] = np.logical_or.reduceat(units.masks[order], starts, axis=0)
    hits = (covered.reshape(n_views, n_parts, n_points) & visible[:, None, :]).sum(axis=0)
    onehot = _onehot(superpoints, n_sp)
    inside = np.asarray(onehot.T @ hits.T.astype(np.float64)).T  # (P, K)
    seen = np.bincount(superpoints, weights=visible.sum(axis=0), minlength=n_sp)
    return np.divide(inside, seen, out=np.zeros_like(inside), where=seen > 0)


def is_small_part(name: str) -> bool:
    """Whether a part name contains one of PartSLIP's small-part words."""
    name = name.lower()
    return any(word in name for word in SMALL_PARTS)


def vote_semantic(scores: np.ndarray, superpoints: np.ndarray, part_names: list[str],
                  threshold: float = 0.5) -> np.ndarray:
    """Point labels from voting scores.

    scores: (P, K) from `vote_scores`; superpoints: (N,) int in [0, K).
    A superpoint takes argmax_j S if that is >= ``threshold``, else -1; if a small part
    (`SMALL_PARTS`) reaches ``threshold`` it wins over larger parts (small parts sit
    inside larger parts' boxes and would otherwise always lose the vote).
    Returns (N,) int32 part index, -1 unlabelled.
    """
    n_parts, n_sp = scores.shape
    if n_parts == 0:
        return np.full(superpoints.shape, -1, np.int32)
    label = np.where(scores.max(axis=0) >= threshold, scores.argmax(axis=0), -1)
    small = np.array([is_small_part(name) for name in part_names[:n_parts]], bool)
    if small.any():
        small_scores = np.where(small[:, None], scores, -np.inf)
        label = np.where(small_scores.max(axis=0) >= threshold, small_scores.argmax(axis=0),
                         label)
    return label.astype(np.int32)[superpoints]


def vote_instances(units: KnowledgeUnits, boxes: Boxes, visible: np.ndarray,
                   superpoints: np.ndarray, points: np.ndarray, pixel_point: np.ndarray,
                   semantic: np.ndarray, adjacency_gap: float = 0.02,
                   feature_distance: float = 0.2, size_ratio: float = 100.0,
                   box_iou: float = 0.5, scores: np.ndarray | None = None,
                   unit_weights: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PartSLIP instance merging over labelled superpoints.

    units: the box / mask units voted with (their masks give the "fraction inside");
    boxes: the predicted boxes (views as in ``pixel_point``); visible (V, N) bool;
    superpoints (N,) int, every id in [0, K) present; points (N, 3); pixel_point
    (V, H, W) int32; semantic (N,) int32 from `vote_semantic`.
    Two superpoints of the same part are linked when their axis-aligned bounding boxes
    are within ``adjacency_gap`` on every axis, their point counts differ by less than
    ``size_ratio`` times, and the `fraction_distance` of their fractions of visible
    points inside each unit of that part (over units whose view shows both) is below
    ``feature_distance``. Linked
    groups are instances; one is kept only if, in some view, the bounding box of its
    pixels has IoU > ``box_iou`` with a predicted box of its part (boxes dropped as
    whole-object units do not count when ``units`` come from boxes or masks).
    scores: (P, K) voting scores for the instance scores; computed when None.
    unit_weights: (U,) float >= 0, a weight per unit (PartSTAD's learned box weights):
    each unit's fractions are scaled by it, so heavy units dominate the distance and
    units of weight 0 do not count; None weighs every unit 1 (PartSLIP).
    Returns (point_instances (N,) int32, -1 none; instance_labels (I,) int32;
    instance_scores (I,) float32 = point-weighted mean of its part's score).
    """
    n_sp = int(superpoints.max()) + 1 if superpoints.size else 0
    sp_label = np.full(n_sp, -1, np.int64)
    sp_label[superpoints] = semantic
    sizes = np.bincount(superpoints, minlength=n_sp)
    a, b = _adjacent_pairs(points, superpoints, sp_label, sizes, adjacency_gap, size_ratio)
    if a.size:
        frac = _fraction_inside(units, visible, superpoints, n_sp)  # (U, K), NaN unseen
        if unit_weights is not None:
            frac = frac * np.asarray(unit_weights, np.float64)[:, None]
        own_part = units.labels[:, None] == sp_label[a][None, :]
        link = fraction_distance(frac[:, a], frac[:, b], own_part) < feature_distance
        a, b = a[link], b[link]
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    graph = sparse.coo_matrix((np.ones(a.size), (a, b)), shape=(n_sp, n_sp))
    _, component = connected_components(graph, directed=False)
    labelled = sp_label >= 0
    groups, sp_group = np.unique(component[labelled], return_inverse=True)
    sp_instance = np.full(n_sp, -1, np.int64)
    sp_instance[labelled] = sp_group
    group_label = np.zeros(groups.size, np.int64)
    group_label[sp_group] = sp_label[labelled]
    point_group = sp_instance[superpoints]

    keep = _matches_a_box(point_group, group_label, pixel_point, boxes, units, box_iou)
    # Slot `groups.size` maps "no group" (-1) to -1 without a masked gather.
    new_id = np.full(groups.size + 1, -1, np.int64)
    new_id[np.flatnonzero(keep)] = np.arange(int(keep.sum()))
    point_instances = new_id[point_group]
    instance_labels = group_label[keep].astype(np.int32)

    if scores is None:
        n_parts = max(boxes.part_probs.shape[1], int(sp_label.max()) + 1)
        scores = vote_scores(units, visible, superpoints, n_parts)
    in_instance = np.nonzero(point_instances >= 0)[0]
    point_score = scores[semantic[in_instance], superpoints[in_instance]]
    n_inst = instance_labels.size
    total = np.bincount(point_instances[in_instance], weights=point_score, minlength=n_inst)
    count = np.bincount(point_instances[in_instance], minlength=n_inst)
    instance_scores = (total / np.maximum(count, 1)).astype(np.float32)
    return point_instances.astype(np.int32), instance_labels, instance_scores


def fraction_distance(frac_a: np.ndarray, frac_b: np.ndarray, counted: np.ndarray
                      ) -> np.ndarray:
    """PartSLIP's distance between superpoints' "fraction inside" vectors.

    frac_a, frac_b: (U, E) fraction of each pair's superpoint inside each unit, NaN where
    the unit's view does not show it; counted: (U, E) bool, the units that may count
    (those of the pair's part). Over the units that count and show both superpoints, the
    L1 distance divided by the larger of the two vectors' sums (the reference's
    normalisation); a pair with no such unit, or whose sums are both ~0 (no box covers
    either), gets 1: without shared evidence two superpoints never merge.
    Returns (E,) float64.
    """
    shared = counted & np.isfinite(frac_a) & np.isfinite(frac_b)
    a = np.where(shared, frac_a, 0.0)
    b = np.where(shared, frac_b, 0.0)
    larger = np.maximum(a.sum(axis=0), b.sum(axis=0))
    l1 = np.abs(a - b).sum(axis=0)
    return np.divide(l1, larger, out=np.ones_like(larger), where=larger >= 1e-3)


def vote(units: KnowledgeUnits, boxes: Boxes | None, views_pixel_point: np.ndarray,
         superpoints: np.ndarray, points: np.ndarray, part_names: list[str],
         mesh: Mesh | None = None, threshold: float = 0.5, instances: bool = True,
         adjacency_gap: float = 0.02, feature_distance: float = 0.2,
         size_ratio: float = 100.0, box_iou: float = 0.5, face_neighbours: int = 5
         ) -> Labelling:
    """PartSLIP voting end to end: semantic labels, instances and (meshes) face labels.

    views_pixel_point: (V, H, W) int32 from the render stage; superpoints (N,) int;
    points (N, 3). Instances need the predicted ``boxes``; with ``boxes`` None (pixel-map
    units) or ``instances`` False the Labelling has no instances. Returns a Labelling
    with method "vote"; point_probs holds the voting scores S of each point's
    superpoint (N, P) (not normalised across parts).
    """
    n_points = points.shape[0]
    visible = visible_points(views_pixel_point, n_points)
    scores = vote_scores(units, visible, superpoints, len(part_names))
    semantic = vote_semantic(scores, superpoints, part_names, threshold)
    point_instances = instance_scores = None
    if instances and boxes is not None:
        point_instances, _, instance_scores = vote_instances(
            units, boxes, visible, superpoints, points, views_pixel_point, semantic,
            adjacency_gap=adjacency_gap, feature_distance=feature_distance,
            size_ratio=size_ratio, box_iou=box_iou, scores=scores)
    face_labels = None
    if mesh is not None and len(mesh.faces):
        face_labels = face_labels_from_points(points, semantic, mesh.vertices, mesh.faces,
                                              k=face_neighbours)
    return Labelling(point_labels=semantic,
                     point_probs=scores[:, superpoints].T.astype(np.float32),
                     point_instances=point_instances, instance_scores=instance_scores,
                     face_labels=face_labels, part_names=list(part_names), method="vote")


# --- the `vote` stage -----------------------------------------------------------------


@dataclass
class VoteConfig:
    """Options of `partseg vote` (see its --help)."""

    threshold: float = 0.5
    instances: bool = True
    adjacency_gap: float = 0.02
    feature_distance: float = 0.2
    size_ratio: float = 100.0
    box_iou: float = 0.5
    face_neighbours: int = 5


def run(workspace: Workspace, shape_ids: list[str], config: VoteConfig,
        force: bool = False) -> StageReport:
    """Store each shape's PartSLIP labelling (records.Labelling) as "vote"."""

    def compute(shape_id: str) -> Labelling:
        scope = shape_scope(shape_id)
        shape = workspace.read_record(scope, "shape", Shape)
        units = workspace.read_record(scope, "backproject", KnowledgeUnits)
        pixel_point = workspace.read(scope, "render", names=["pixel_point"]
                                     ).arrays["pixel_point"]
        superpoints = workspace.read_record(scope, "superpoints", Superpoints).labels
        teacher = teacher_output(workspace, scope)
        boxes = teacher if isinstance(teacher, Boxes) else None
        # Unit labels index the teacher's prompt list, which may differ from the
        # dataset's own part names (`detect --parts`).
        part_names = list(teacher.part_names) or list(shape.part_names)
        if len(units) and int(units.labels.max()) >= len(part_names):
            raise StoreError(f"{shape_id}: knowledge units name part {int(units.labels.max())}"
                             f" but the teacher lists {len(part_names)} part names; rerun "
                             "`partseg detect` and `partseg backproject`")
        return vote(units, boxes, pixel_point, superpoints, shape.points, part_names,
                    mesh=shape.mesh, threshold=config.threshold, instances=config.instances,
                    adjacency_gap=config.adjacency_gap,
                    feature_distance=config.feature_distance, size_ratio=config.size_ratio,
                    box_iou=config.box_iou, face_neighbours=config.face_neighbours)

    return run_per_shape(workspace, "vote", shape_ids, asdict(config),
                         ["shape", "render", "detect", "superpoints", "backproject"],
                         compute, force)


# --- helpers --------------------------------------------------------------------------

def _onehot(superpoints: np.ndarray, n_sp: int) -> sparse.csr_matrix:
    """(N, K) sparse point -> superpoint membership."""
    from scipy import sparse

    n = superpoints.shape[0]
    return sparse.csr_matrix((np.ones(n), (np.arange(n), superpoints)), shape=(n, n_sp))


def _adjacent_pairs(points: np.ndarray, superpoints: np.ndarray, sp_label: np.ndarray,
                    sizes: np.ndarray, gap: float, size_ratio: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a < b) of labelled superpoints of one part that may merge: bounding boxes
    within ``gap`` on every axis and sizes within ``size_ratio``. Two (E,) int arrays."""
    pairs = superpoint_adjacency(points, superpoints, gap).astype(np.intp)
    a, b = pairs[:, 0], pairs[:, 1]
    small, large = np.minimum(sizes[a], sizes[b]), np.maximum(sizes[a], sizes[b])
    ok = (sp_label[a] >= 0) & (sp_label[a] == sp_label[b]) & (large < size_ratio * small)
    return a[ok], b[ok]


def _fraction_inside(units: KnowledgeUnits, visible: np.ndarray, superpoints: np.ndarray,
                     n_sp: int) -> np.ndarray:
    """(U, K) float64: fraction of superpoint k's points visible in unit u's view that lie
    in u's mask; NaN where that view shows none of k."""
    onehot = _onehot(superpoints, n_sp)
    seen = np.asarray(onehot.T @ visible.T.astype(np.float64)).T  # (V, K)
    inside = units.masks & visible[units.view]
    hit = np.asarray(onehot.T @ inside.T.astype(np.float64)).T  # (U, K)
    seen_u = seen[units.view]
    return np.divide(hit, seen_u, out=np.full_like(hit, np.nan), where=seen_u > 0)


def _matches_a_box(point_group: np.ndarray, group_label: np.ndarray, pixel_point: np.ndarray,
                   boxes: Boxes, units: KnowledgeUnits, box_iou: float) -> np.ndarray:
    """(G,) bool: group's pixel bounding box in some view has IoU > box_iou with a box of
    its part in that view."""
    n_views, height, width = pixel_point.shape
    n_groups = group_label.shape[0]
    if n_groups == 0 or len(boxes) == 0:
        return np.zeros(n_groups, bool)
    flat = pixel_point.reshape(-1)
    index = np.flatnonzero(flat >= 0)  # 1-D + divmod: much faster than a 2-D nonzero
    view, pixel = np.divmod(index, height * width)
    group = point_group[flat[index]]
    ok = group >= 0
    key = view[ok].astype(np.int64) * n_groups + group[ok]
    pixel = pixel[ok]
    # Row / column occupancy per (view, group): the extents are first / last occupied
    # index, found with argmax instead of a scatter-min over pixels.
    rows = np.zeros((n_views * n_groups, height), bool)
    cols = np.zeros((n_views * n_groups, width), bool)
    rows[key, pixel // width] = True
    cols[key, pixel % width] = True
    present = rows.any(axis=1)
    extent = np.stack([cols.argmax(axis=1), rows.argmax(axis=1),
                       width - cols[:, ::-1].argmax(axis=1),
                       height - rows[:, ::-1].argmax(axis=1)], axis=1).astype(np.float64)
    extent = extent.reshape(n_views, n_groups, 4)
    present = present.reshape(n_views, n_groups)

    chosen = np.arange(len(boxes))
    if units.source in ("boxes", "masks"):
        chosen = np.unique(units.source_index)
    box_view = boxes.view[chosen].astype(np.intp)
    xyxy = boxes.xyxy[chosen].astype(np.float64)
    ext = extent[box_view]  # (B, G, 4)
    iw = np.clip(np.minimum(ext[..., 2], xyxy[:, None, 2])
                 - np.maximum(ext[..., 0], xyxy[:, None, 0]), 0, None)
    ih = np.clip(np.minimum(ext[..., 3], xyxy[:, None, 3])
                 - np.maximum(ext[..., 1], xyxy[:, None, 1]), 0, None)
    inter = iw * ih
    area_e = (ext[..., 2] - ext[..., 0]) * (ext[..., 3] - ext[..., 1])
    area_b = ((xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]))[:, None]
    iou = inter / np.maximum(area_e + area_b - inter, 1e-9)
    same_part = boxes.labels[chosen][:, None] == group_label[None, :]
    match = (iou > box_iou) & same_part & present[box_view]
    return match.any(axis=0)

"""PartSLIP oversegmentation of a point cloud into superpoints (L0 cut pursuit).

Reference recipe (PartSLIP, see docs/reference-details.md "Superpoints"):

1. normals from Open3D (hybrid search, radius 0.1, at most 30 neighbours) when absent;
2. a 10-nearest-neighbour graph;
3. point features y = [normal, 0.3 * RGB];
4. edge weights w = (1 / (1 + d / mean(d) + f / mean(f)))^2, d the point distance and
   f the feature distance of the edge's endpoints;
5. L0 cut pursuit with the quadratic ("L2") fidelity on y and regularisation 0.05;
6. components of <= 10 points merged into the nearest larger component.

The reference calls Landrieu's `libcp.cutpursuit`, which minimises
``1/2 sum_v ||x_v - y_v||^2 + reg * sum_{uv cut} w_uv``. We use the `cut-pursuit-py`
wheel (Raguet's parallel cut pursuit `Cp_d0_dist`, quadratic loss), which minimises
``sum_v ||x_v - y_v||^2 + sum_{uv cut} w'_uv`` and ignores its `reg_strength` argument
whenever per-edge weights are given; passing ``w' = 2 * reg * w`` makes the two
objectives identical up to a factor 2. Both solvers are greedy (split by k-means
initialised graph cuts, then merge), so partitions can differ in detail, not in the
energy they minimise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .pipeline import StageReport, run_per_shape
from .records import Shape, Superpoints
from .store import Workspace, shape_scope

_BLOCK = 512


def estimate_normals(points: np.ndarray, radius: float = 0.1, max_nn: int = 30) -> np.ndarray:
    """Unoriented unit normals by local PCA, as Open3D computes them for PartSLIP.

    Args:
        points: (N, 3) float, normalised shape frame.
        radius: neighbourhood radius of the hybrid search (same units as `points`).
        max_nn: maximum number of neighbours within `radius`.

    Returns:
        (N, 3) float32 unit normals; the sign of each normal is arbitrary, as in the
        reference (Open3D does not orient normals it estimates from scratch).
    """
    import open3d as o3d

    pcd = o3d.geometry.PointCloud()
    pcd.points = o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64))
    pcd.estimate_normals(
        search_param=o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=max_nn)
    )
    return np.asarray(pcd.normals, dtype=np.float32)


def knn_edges(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed k-nearest-neighbour edges, sorted by source point.

    Args:
        points: (N, 3) float.
        k: neighbours per point (fewer when N <= k).

    Returns:
        source (E,) int64, target (E,) int64 with source[i] != target[i] and `source`
        non-decreasing, and length (E,) float64 Euclidean edge lengths.
    """
    n = points.shape[0]
    kq = min(k + 1, n)
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(points).query(points, k=kq)
    dist = dist.reshape(n, kq)
    idx = idx.reshape(n, kq)
    source = np.repeat(np.arange(n), kq)
    target = idx.ravel()
    # Dropping self-matches (rather than the first column) stays correct when duplicate
    # points make the query return another copy first.
    keep = source != target
    return source[keep], target[keep], dist.ravel()[keep]


def edge_weights(lengths: np.ndarray, feature_dists: np.ndarray) -> np.ndarray:
    """PartSLIP edge weights w = (1 / (1 + d / mean(d) + f / mean(f)))^2.

    Args:
        lengths: (E,) float edge lengths d.
        feature_dists: (E,) float feature distances f.

    Returns:
        (E,) float64 weights in (0, 1]. A term whose mean is 0 (all points coincident,
        or constant features) contributes 0 rather than NaN.
    """
    if lengths.size == 0:
        return np.zeros(0, dtype=np.float64)
    eps = np.finfo(np.float64).tiny
    d = lengths / max(float(np.mean(lengths)), eps)
    f = feature_dists / max(float(np.mean(feature_dists)), eps)
    return 1.0 / (1.0 + d + f) ** 2


def l0_cut_pursuit(
    features: np.ndarray,
    source: np.ndarray,
    target: np.ndarray,
    weights: np.ndarray,
    regularization: float,
) -> np.ndarray:
    """Piecewise-constant approximation of `features` on a graph (L0 cut pursuit).

    Minimises ``1/2 sum_v ||x_v - y_v||^2 + regularization * sum_{e cut} weights_e``
    (libcp's L2 energy) and returns the partition into constant pieces.

    Args:
        features: (N, D) float observations y.
        source, target: (E,) int edge endpoints, `source` non-decreasing.
        weights: (E,) float non-negative edge weights.
        regularization: strength of the contour penalty.

    Returns:
        (N,) int64 component id per point (ids are the solver's, not contiguous).
    """
    from cut_pursuit_py import perform_cut_pursuit

    if np.any(np.diff(source) < 0):
        raise ValueError("l0_cut_pursuit needs edges sorted by source vertex")
    comp = perform_cut_pursuit(
        reg_strength=float(regularization),  # ignored by the wheel once weights are given
        D=int(features.shape[1]),
        pc_vec=np.ascontiguousarray(features, dtype=np.float32),
        edge_weights=np.ascontiguousarray(2.0 * regularization * weights, dtype=np.float32),
        Eu=np.ascontiguousarray(source, dtype=np.uint32),
        Ev=np.ascontiguousarray(target, dtype=np.uint32),
        verbose=False,
    )
    return np.asarray(comp, dtype=np.int64)


def merge_small_components(points: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Reassign every component of <= `min_size` points to the nearest larger one.

    A small component goes as a whole to the large component that owns the point
    closest to any of its points. If no component is larger than `min_size`, the
    labels are returned unchanged.

    Args:
        points: (N, 3) float.
        labels: (N,) int component ids (any values).
        min_size: largest size that counts as small.

    Returns:
        (N,) int64 component ids (a subset of the input ids).
    """
    labels = np.asarray(labels, dtype=np.int64)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    small = counts[inverse] <= min_size
    if not small.any() or small.all():
        return labels
    large_idx = np.flatnonzero(~small)
    small_idx = np.flatnonzero(small)
    from scipy.spatial import cKDTree

    dist, nearest = cKDTree(points[large_idx]).query(points[small_idx], k=1)
    # Per small component, pick its point with the smallest distance to a large point:
    # sort by (component, distance) and keep the first row of each component.
    comp = labels[small_idx]
    order = np.lexsort((dist, comp))
    first = np.ones(order.size, dtype=bool)
    first[1:] = comp[order[1:]] != comp[order[:-1]]
    winners = order[first]
    # Rows of `winners` follow the sorted unique small ids, so they index by inverse.
    inv_small = np.unique(comp, return_inverse=True)[1].reshape(-1)
    out = labels.copy()
    out[small_idx] = labels[large_idx[nearest[winners]]][inv_small]
    return out


def compute_superpoints(
    points: np.ndarray,
    colors: np.ndarray,
    normals: np.ndarray | None = None,
    k: int = 10,
    regularization: float = 0.05,
    color_weight: float = 0.3,
    min_size: int = 10,
) -> np.ndarray:
    """PartSLIP superpoints of one point cloud.

    Args:
        points: (N, 3) float, normalised shape frame (PartSLIP's radius and
            regularisation assume a shape scaled into the unit sphere).
        colors: (N, 3) float RGB in [0, 1].
        normals: (N, 3) float normals, or None to estimate them with Open3D
            (`estimate_normals`, radius 0.1, 30 neighbours) as the reference does.
        k: neighbours per point in the graph.
        regularization: L0 cut-pursuit regularisation strength (larger = fewer, bigger
            superpoints).
        color_weight: factor on RGB in the point features [normal, color_weight * RGB].
        min_size: components of at most this many points are merged into the nearest
            larger component (0 disables the merge).

    Returns:
        (N,) int32 superpoint ids, contiguous in 0..K-1. Deterministic for given inputs.
    """
    points = np.asarray(points, dtype=np.float64)
    n = points.shape[0]
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    if np.shape(colors) != (n, 3):
        raise ValueError(f"colors must be ({n}, 3), got {np.shape(colors)}")
    if n <= 1:
        return np.zeros(n, dtype=np.int32)
    if normals is None:
        normals = estimate_normals(points)
    elif np.shape(normals) != (n, 3):
        raise ValueError(f"normals must be ({n}, 3), got {np.shape(normals)}")

    features = np.hstack(
        [np.asarray(normals, dtype=np.float64), color_weight * np.asarray(colors, np.float64)]
    )
    source, target, lengths = knn_edges(points, k)
    feature_dists = np.linalg.norm(features[source] - features[target], axis=1)
    weights = edge_weights(lengths, feature_dists)
    labels = l0_cut_pursuit(features, source, target, weights, regularization)
    if min_size > 0:
        labels = merge_small_components(points, labels, min_size)
    return np.unique(labels, return_inverse=True)[1].astype(np.int32).reshape(n)


def superpoint_boxes(points: np.ndarray, superpoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounding box of each superpoint.

    Args:
        points: (N, 3) float.
        superpoints: (N,) int ids in 0..K-1, every id present.

    Returns:
        lo (K, 3) and hi (K, 3) float64 box corners.
    """
    order = np.argsort(superpoints, kind="stable")
    sorted_ids = superpoints[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    pts = np.asarray(points, dtype=np.float64)[order]
    return np.minimum.reduceat(pts, starts, axis=0), np.maximum.reduceat(pts, starts, axis=0)


def superpoint_adjacency(
    points: np.ndarray, superpoints: np.ndarray, gap: float = 0.02
) -> np.ndarray:
    """Pairs of superpoints whose axis-aligned bounding boxes are within `gap`.

    Two boxes are adjacent when, on every axis, the space between them is <= `gap`
    (overlapping boxes have negative space), i.e. the boxes grown by `gap` touch.
    Used by PartSLIP's instance merging (union-find over adjacent superpoints).

    Args:
        points: (N, 3) float.
        superpoints: (N,) int ids, contiguous in 0..K-1.
        gap: largest allowed separation, in the units of `points`.

    Returns:
        (E, 2) int32 pairs (i, j) with i < j, sorted lexicographically.
    """
    superpoints = np.asarray(superpoints)
    if superpoints.size == 0:
        return np.zeros((0, 2), dtype=np.int32)
    lo, hi = superpoint_boxes(points, superpoints)
    pairs = []
    # Row blocks bound memory at _BLOCK x K x 3 for shapes with thousands of superpoints.
    for start in range(0, lo.shape[0], _BLOCK):
        blo, bhi = lo[start : start + _BLOCK], hi[start : start + _BLOCK]
        # Separation on each axis between boxes a and b: max(lo_b - hi_a, lo_a - hi_b).
        sep = np.maximum(lo[None, :, :] - bhi[:, None, :], blo[:, None, :] - hi[None, :, :])
        i, j = np.nonzero(np.all(sep <= gap, axis=2))
        i = i + start
        keep = i < j
        pairs.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(pairs).astype(np.int32)


# --- the `superpoints` stage --------------------------------------------------------


@dataclass
class SuperpointConfig:
    """Options of `partseg superpoints` (see its --help)."""

    k: int = 10
    regularization: float = 0.05
    color_weight: float = 0.3
    min_size: int = 10
    use_shape_normals: bool = False  # PartSLIP re-estimates normals with Open3D


def run(workspace: Workspace, shape_ids: list[str], config: SuperpointConfig,
        force: bool = False) -> StageReport:
    def compute(shape_id: str) -> Superpoints:
        shape = workspace.read_record(shape_scope(shape_id), "shape", Shape)
        given = config.use_shape_normals and bool(np.any(shape.normals))
        normals = shape.normals if given else None
        return Superpoints(compute_superpoints(
            shape.points, shape.colors, normals, k=config.k,
            regularization=config.regularization, color_weight=config.color_weight,
            min_size=config.min_size))

    return run_per_shape(workspace, "superpoints", shape_ids, asdict(config), ["shape"],
                         compute, force)


import numpy as np
import pytest
from shared_data import shared_data

from partseg_cli.superpoints import (
    compute_superpoints,
    edge_weights,
    estimate_normals,
    knn_edges,
    l0_cut_pursuit,
    merge_small_components,
    superpoint_adjacency,
)


def right_angle_planes(step: float = 0.02) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Floor z=0 (red) and wall x=0 (blue) meeting at a crease along the y axis.

    Returns points (N, 3), colors (N, 3), normals (N, 3), plane id (N,).
    """
    u = np.arange(step, 1.0 + 1e-9, step)
    a, b = np.meshgrid(u, u, indexing="ij")
    a, b = a.ravel(), b.ravel()
    floor = np.stack([a, b, np.zeros_like(a)], axis=1)
    wall = np.stack([np.zeros_like(a), b, a], axis=1)
    points = np.concatenate([floor, wall]) - 0.5
    n = len(a)
    colors = np.concatenate([np.tile([1.0, 0.0, 0.0], (n, 1)), np.tile([0.0, 0.0, 1.0], (n, 1))])
    normals = np.concatenate([np.tile([0.0, 0.0, 1.0], (n, 1)), np.tile([1.0, 0.0, 0.0], (n, 1))])
    return points, colors, normals, np.repeat([0, 1], n)


@pytest.mark.parametrize("given_normals", [True, False])
def test_planes_split_at_crease(given_normals):
    points, colors, normals, plane = right_angle_planes()
    sp = compute_superpoints(points, colors, normals if given_normals else None)
    assert sp.max() + 1 >= 2
    # No superpoint holds points of both planes.
    planes_per_sp = np.zeros((sp.max() + 1, 2), dtype=bool)
    planes_per_sp[sp, plane] = True
    assert not np.any(planes_per_sp.all(axis=1))


def test_uniform_plane_is_one_superpoint():
    points, colors, normals, plane = right_angle_planes()
    floor = plane == 0
    sp = compute_superpoints(points[floor], colors[floor], normals[floor])
    assert np.all(sp == 0)


def test_ids_contiguous_int32_and_deterministic():
    rng = np.random.default_rng(0)
    points = rng.random((3000, 3)) - 0.5
    colors = rng.random((3000, 3))
    normals = rng.normal(size=(3000, 3))
    first = compute_superpoints(points, colors, normals, min_size=0)
    second = compute_superpoints(points, colors, normals, min_size=0)
    assert first.dtype == np.int32 and first.shape == (3000,)
    np.testing.assert_array_equal(np.unique(first), np.arange(first.max() + 1))
    np.testing.assert_array_equal(first, second)


def test_min_size_merge_leaves_no_small_component():
    points, colors, normals, _ = right_angle_planes()
    rng = np.random.default_rng(1)
    outliers = rng.choice(len(points), size=60, replace=False)
    colors[outliers] = rng.random((60, 3))  # off-colour specks become tiny components
    unmerged = compute_superpoints(points, colors, normals, min_size=0)
    assert np.bincount(unmerged).min() <= 10  # the case is not trivial
    merged = compute_superpoints(points, colors, normals, min_size=10)
    assert np.bincount(merged).min() > 10
    np.testing.assert_array_equal(np.unique(merged), np.arange(merged.max() + 1))


def test_merge_small_components_hand_case():
    # Component 7 (3 points at x=1.0..1.2) is closest to component 5 (x=1.5..) ;
    # component 9 (1 point at x=-0.4) is closest to component 2 (x=0..).
    points = np.zeros((44, 3))
    points[:20, 0] = np.linspace(0.0, 0.3, 20)  # comp 2
    points[20:23, 0] = [1.0, 1.1, 1.2]  # comp 7
    points[23:43, 0] = np.linspace(1.5, 2.0, 20)  # comp 5
    points[43, 0] = -0.4  # comp 9
    labels = np.array([2] * 20 + [7] * 3 + [5] * 20 + [9])
    out = merge_small_components(points, labels, min_size=10)
    np.testing.assert_array_equal(out, [2] * 20 + [5] * 3 + [5] * 20 + [2])
    # Nothing large: labels come back unchanged.
    np.testing.assert_array_equal(merge_small_components(points, labels, 50), labels)


def test_small_component_moves_as_a_whole():
    # A 2-point component between two large ones goes entirely to the nearer one.
    points = np.zeros((42, 3))
    points[:20, 0] = np.linspace(-1.0, 0.0, 20)  # comp 0, ends at 0.0
    points[20:22, 0] = [0.3, 0.9]  # comp 1: 0.3 is 0.3 from comp 0, 0.9 is 0.1 from comp 2
    points[22:, 0] = np.linspace(1.0, 2.0, 20)  # comp 2
    labels = np.array([0] * 20 + [1] * 2 + [2] * 20)
    out = merge_small_components(points, labels, min_size=10)
    np.testing.assert_array_equal(out[20:22], [2, 2])


def test_edge_weights_hand_case():
    # mean(d) = 2, mean(f) = 2 -> w = 1 / (1 + d/2 + f/2)^2
    w = edge_weights(np.array([1.0, 3.0]), np.array([2.0, 2.0]))
    np.testing.assert_allclose(w, [1 / 2.5**2, 1 / 3.5**2])
    # Constant features: the feature term vanishes instead of giving NaN.
    np.testing.assert_allclose(edge_weights(np.array([1.0, 1.0]), np.zeros(2)), [0.25, 0.25])


@pytest.mark.parametrize(("weight", "split"), [(0.2, True), (0.3, False)])
def test_l0_cut_pursuit_uses_libcp_energy(weight, split):
    # libcp: 1/2 sum ||x - y||^2 + reg sum_cut w. Two nodes y=0, y=1, reg=1:
    # merged costs 1/2 (0.25 + 0.25) = 0.25, split costs w -> split iff w < 0.25.
    comp = l0_cut_pursuit(
        np.array([[0.0], [1.0]]), np.array([0]), np.array([1]), np.array([weight]), 1.0
    )
    assert (comp[0] != comp[1]) == split


def test_l0_cut_pursuit_rejects_unsorted_edges():
    with pytest.raises(ValueError, match="sorted"):
        l0_cut_pursuit(np.zeros((3, 1)), np.array([1, 0]), np.array([2, 1]), np.ones(2), 1.0)


def test_knn_edges_with_duplicates():
    points = np.array([[0.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]])
    source, target, lengths = knn_edges(points, k=2)
    assert np.all(source != target)
    assert np.all(np.diff(source) >= 0)
    np.testing.assert_allclose(lengths, np.linalg.norm(points[source] - points[target], axis=1))
    assert set(target[source == 3].tolist()) == {2, 0} or set(target[source == 3]) == {2, 1}


def test_estimate_normals_plane():
    points, _, _, plane = right_angle_planes()
    normals = estimate_normals(points[plane == 0])
    assert normals.dtype == np.float32
    np.testing.assert_allclose(np.abs(normals[:, 2]), 1.0, atol=1e-5)


def test_tiny_inputs():
    assert compute_superpoints(np.zeros((0, 3)), np.zeros((0, 3))).shape == (0,)
    np.testing.assert_array_equal(compute_superpoints(np.zeros((1, 3)), np.zeros((1, 3))), [0])
    sp = compute_superpoints(np.eye(3), np.zeros((3, 3)), np.tile([0, 0, 1.0], (3, 1)))
    assert sp.shape == (3,) and sp.min() == 0


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="colors"):
        compute_superpoints(np.zeros((4, 3)), np.zeros((3, 3)))


def test_adjacency_hand_case():
    # Boxes: 0 = [0, .1]^3; 1 = x in [.11, .2] (0.01 from box 0 along x);
    # 2 = [.5, .6]^3 (far); 3 = x in [.61, .7] but y in [.65, .7] (0.05 away along y).
    points = np.array(
        [
            [0.0, 0.0, 0.0], [0.1, 0.1, 0.1],
            [0.11, 0.0, 0.0], [0.2, 0.1, 0.1],
            [0.5, 0.5, 0.5], [0.6, 0.6, 0.6],
            [0.61, 0.65, 0.5], [0.7, 0.7, 0.6],
        ]
    )  # fmt: skip
    sp = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(superpoint_adjacency(points, sp, gap=0.02), [[0, 1]])
    np.testing.assert_array_equal(superpoint_adjacency(points, sp, gap=0.06), [[0, 1], [2, 3]])
    pairs = superpoint_adjacency(points, sp, gap=0.0)
    assert pairs.shape == (0, 2) and pairs.dtype == np.int32
    # Overlapping boxes are adjacent.
    np.testing.assert_array_equal(superpoint_adjacency(points, np.array([0, 1] * 4)), [[0, 1]])


def test_adjacency_matches_brute_force_across_blocks():
    rng = np.random.default_rng(2)
    sp = rng.integers(0, 700, size=3000)
    sp = np.unique(sp, return_inverse=True)[1]
    points = rng.random((3000, 3)) * 4 + sp[:, None] * 0.01
    pairs = superpoint_adjacency(points, sp, gap=0.02)
    k = sp.max() + 1
    lo = np.array([points[sp == i].min(0) for i in range(k)])
    hi = np.array([points[sp == i].max(0) for i in range(k)])
    sep = np.maximum(lo[None] - hi[:, None], lo[:, None] - hi[None]).max(axis=2)
    i, j = np.nonzero(np.triu(sep <= 0.02, k=1))
    np.testing.assert_array_equal(pairs, np.stack([i, j], axis=1))


def test_shapenetpart_cap_purity():
    table = np.loadtxt(shared_data("shapenetpart", "02954340", "test_000.txt"))
    labels = table[:, 6].astype(np.int64)
    sp = compute_superpoints(table[:, :3], np.full((len(table), 3), 0.5), table[:, 3:6])
    k = sp.max() + 1
    assert 10 <= k <= 500
    counts = np.zeros((k, labels.max() + 1), dtype=np.int64)
    np.add.at(counts, (sp, labels), 1)
    assert counts.max(axis=1).sum() / len(labels) > 0.95

"""Tests for the orientation alignment of pre-aligned students (orientation.py, align=axes)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from partseg_cli.distill import (
    DistillConfig,
    PointCloud,
    aligned,
    apply_student,
    check_config,
    load_student,
    save_student,
    stage_params,
    train_student,
)
from partseg_cli.errors import ModelError, PartsegError
from partseg_cli.orientation import (
    Aligner,
    axis_rotations,
    chamfer_costs,
    medoid,
    normalise_cloud,
    reference_cloud,
    register,
    rotate,
)
from partseg_cli.records import KnowledgeUnits


def l_shape(n: int = 1500, seed: int = 0, stretch: float = 1.0) -> np.ndarray:
    """An asymmetric cloud (no axis rotation but the identity maps it onto itself): a
    long bar along x, a shorter one up y at its end, a stub along z."""
    rng = np.random.default_rng(seed)
    t = rng.random((n, 1))
    bars = [np.c_[2.0 * stretch * t[: n // 2] - 1, np.zeros((n // 2, 2))],
            np.c_[np.full((n // 3, 1), -1.0), 1.2 * t[: n // 3], np.zeros((n // 3, 1))],
            np.c_[np.full((n - n // 2 - n // 3, 1), -1.0), np.zeros((n - n // 2 - n // 3, 1)),
                  0.5 * t[: n - n // 2 - n // 3]]]
    pts = np.concatenate(bars) + rng.normal(scale=0.01, size=(n, 3))
    return (pts - pts.mean(0)).astype(np.float32)


def test_the_24_axis_rotations_are_proper_distinct_and_start_with_the_identity():
    rots = axis_rotations()
    assert rots.shape == (24, 3, 3)
    np.testing.assert_allclose(np.linalg.det(rots), 1.0)
    np.testing.assert_allclose(np.einsum("kij,kil->kjl", rots, rots), np.broadcast_to(
        np.eye(3), (24, 3, 3)), atol=1e-12)
    assert len({tuple(r.ravel()) for r in rots}) == 24
    assert set(np.unique(rots)) == {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(rots[0], np.eye(3))


def test_a_rotated_copy_registers_back_to_the_identity_equivalent_rotation():
    pts = l_shape()
    reference = reference_cloud(pts, seed=3)
    for rot in axis_rotations():
        found, cost = register(rotate(pts, rot) * 2.5 + 0.3, reference, seed=1)
        np.testing.assert_array_equal(found @ rot, np.eye(3))  # undoes it exactly
        assert cost < 0.05
    # another sample of a slightly different shape still registers to it
    other = rotate(l_shape(1200, seed=7, stretch=1.1), axis_rotations()[17])
    np.testing.assert_array_equal(register(other, reference)[0] @ axis_rotations()[17],
                                  np.eye(3))


def test_registration_is_deterministic_given_the_seed_and_the_costs_are_symmetric():
    a, b = l_shape(900, 0), l_shape(900, 1, 1.2)
    r1, c1 = register(a, b, seed=5)
    r2, c2 = register(a, b, seed=5)
    np.testing.assert_array_equal(r1, r2)
    assert c1 == c2
    na, nb = normalise_cloud(a), normalise_cloud(b)
    assert min(chamfer_costs(na, nb)) == pytest.approx(min(chamfer_costs(nb, na)))
    norm = normalise_cloud(a * 4 + 1)
    np.testing.assert_allclose(norm.mean(0), 0, atol=1e-9)
    assert np.sqrt((norm ** 2).sum(1).mean()) == pytest.approx(1.0)


def test_the_medoid_reference_is_the_typical_shape():
    clouds = [l_shape(600, 0, 1.0), l_shape(600, 1, 1.05), l_shape(600, 2, 0.95),
              l_shape(600, 3, 1.6)]
    assert medoid(clouds) in (0, 1, 2)
    assert medoid(clouds[:2]) == 0


def units_for(labels: np.ndarray, n_parts: int) -> KnowledgeUnits:
    masks = np.stack([labels == p for p in range(n_parts)])
    k = len(masks)
    return KnowledgeUnits(np.arange(k, dtype=np.int32), masks, np.full(k, 0.9, np.float32),
                          np.zeros(k, np.int32), np.arange(k, dtype=np.int32))


def cloud(points: np.ndarray) -> PointCloud:
    return PointCloud(points, np.zeros_like(points), np.full_like(points, 0.5))


def test_an_aligned_student_labels_a_rotated_shape_as_the_shape_and_round_trips(tmp_path):
    shapes = [l_shape(800, s, 1 + 0.05 * s) for s in range(3)]
    labels = [(s[:, 0] > -0.2).astype(np.int64) for s in shapes]  # the bar's far end: 1
    rot = axis_rotations()[9]
    config = DistillConfig(mode="pre", device="cpu", epochs=4, n_sample=256, batch_size=3,
                           steps_per_epoch=1, backward=False, align="axes")
    trained = train_student([(cloud(s), units_for(g, 2)) for s, g in zip(shapes, labels,
                                                                       strict=True)],
                            2, config)
    aligner = trained.student.aligner
    assert isinstance(aligner, Aligner) and aligner.reference.shape == (512, 3)
    test = cloud(shapes[1])
    turned = PointCloud(rotate(test.points, rot), rotate(test.normals, rot), test.colors)
    here = apply_student(trained.student, test).point_probs
    np.testing.assert_allclose(apply_student(trained.student, turned).point_probs, here,
                               atol=1e-5)
    np.testing.assert_allclose(aligned(turned, aligner).points, aligned(test, aligner).points,
                               atol=1e-6)
    # saved and loaded: the same reference, so the same rotation and the same labels
    save_student(tmp_path / "s", trained, config, ["near", "far"], "k",
                 {f"s{i}": f"k{i}" for i in range(3)}, [])
    loaded = load_student(tmp_path / "s").student
    np.testing.assert_array_equal(loaded.aligner.reference, aligner.reference)
    np.testing.assert_allclose(apply_student(loaded, turned).point_probs, here, atol=1e-5)
    # without alignment the student saves no reference and loads without one
    plain = train_student([(cloud(s), units_for(g, 2)) for s, g in zip(shapes, labels,
                                                                     strict=True)],
                          2, dataclasses.replace(config, align="none"))
    assert plain.student.aligner is None
    save_student(tmp_path / "p", plain, dataclasses.replace(config, align="none"),
                 ["near", "far"], "k", {f"s{i}": f"k{i}" for i in range(3)}, [])
    assert load_student(tmp_path / "p").student.aligner is None


def test_a_saved_aligned_student_without_its_reference_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    pts = l_shape(600)
    config = DistillConfig(mode="pre", device="cpu", epochs=1, n_sample=128,
                           steps_per_epoch=1, backward=False, align="axes")
    trained = train_student([(cloud(pts), units_for((pts[:, 0] > 0).astype(int), 2))], 2,
                            config)
    save_student(tmp_path / "s", trained, config, ["a", "b"], "k", {"s": "k"}, [])
    weights = tmp_path / "s" / "weights.safetensors"
    state = load_file(weights)
    del state["align.reference"]
    save_file(state, weights)
    with pytest.raises(ModelError, match="align.reference"):
        _ = load_student(tmp_path / "s").student


def test_align_is_checked_and_enters_the_key_only_where_it_has_an_effect():
    with pytest.raises(PartsegError, match="--align"):
        check_config(DistillConfig(align="pca"))
    pre = DistillConfig(mode="pre")
    assert "align" not in stage_params(pre)  # the paper's none: keys stored before it hold
    assert stage_params(dataclasses.replace(pre, align="axes"))["align"] == "axes"
    assert "align" not in stage_params(DistillConfig(mode="tta", align="axes"))

"""Tests for the PartDistill student: Eq. 3, class weights, Eq. 4, BD trigger, TTA/Pre."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from shared_data import shared_data

from partseg_cli.distill import (
    DistillConfig,
    PointCloud,
    backward_trigger,
    bd_confidence,
    class_weights,
    distill_collection,
    distill_pre,
    distill_tta,
    distillation_loss,
    plateau_epoch,
    rescore_units,
)
from partseg_cli.encoders import PointNetEncoder, build_encoder
from partseg_cli.errors import InputError, ModelError, PartsegError
from partseg_cli.records import KnowledgeUnits


def make_units(labels, masks, conf) -> KnowledgeUnits:
    k = len(labels)
    masks = np.asarray(masks, bool)
    return KnowledgeUnits(np.asarray(labels, np.int32), masks.reshape(k, masks.shape[-1]),
                          np.asarray(conf, np.float32), np.zeros(k, np.int32),
                          np.arange(k, dtype=np.int32))


def two_clusters(n: int = 1200, seed: int = 0) -> tuple[PointCloud, np.ndarray]:
    """Two Gaussian blobs along x: label 0 left, 1 right."""
    rng = np.random.default_rng(seed)
    half = n // 2
    pts = np.concatenate([rng.normal(size=(half, 3)) * 0.12 + [-0.5, 0, 0],
                          rng.normal(size=(half, 3)) * 0.12 + [0.5, 0, 0]]).astype(np.float32)
    gt = np.repeat([0, 1], half)
    return PointCloud(pts, np.zeros_like(pts), np.full_like(pts, 0.5)), gt


def partial_units(n: int) -> KnowledgeUnits:
    """Units covering the first 30% of each cluster; the rest is never covered."""
    half, part = n // 2, int(0.3 * (n // 2))
    masks = np.zeros((3, n), bool)
    masks[0, :part] = True
    masks[1, half:half + part] = True
    masks[2, half + part // 2:half + part] = True
    return make_units([0, 1, 1], masks, [0.9, 0.8, 0.6])


FAST = DistillConfig(device="cpu", epochs=12, steps_per_epoch=2, n_sample=512)


# --- Eq. 3 ---------------------------------------------------------------------------------


LOGITS = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
MASKS = torch.tensor([[True, True], [True, False], [False, True]])
LABELS = torch.tensor([0, 1, 1])
CONF = torch.tensor([0.5, 1.0, 0.0])  # the third unit has zero confidence: inactive
CLASS_W = torch.tensor([1.0, 2.0])


def test_distillation_loss_area_matches_hand_computation():
    e = math.e
    nll_p0_c0 = -math.log(1 / (1 + e))  # point 0, class 0
    nll_p0_c1 = -math.log(e / (1 + e))
    nll_p1_c0 = -math.log(e ** 2 / (e ** 2 + 1))
    unit_a = 1.0 * 0.5 * (nll_p0_c0 + nll_p1_c0) / 2  # w[0] * C * mean over its 2 points
    unit_b = 2.0 * 1.0 * nll_p0_c1 / 1  # w[1] * C * its single point
    expected = (unit_a + unit_b) / 2  # mean over the 2 active units
    got = distillation_loss(LOGITS, MASKS, LABELS, CONF, CLASS_W, normalise="area")
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Eq. 3 as written sums the per-unit terms instead of averaging them
    got = distillation_loss(LOGITS, MASKS, LABELS, CONF, CLASS_W, normalise="eq3")
    assert got.item() == pytest.approx(unit_a + unit_b, rel=1e-6)
    with pytest.raises(ValueError, match="normalise"):
        distillation_loss(LOGITS, MASKS, LABELS, CONF, CLASS_W, normalise="unit")


def test_distillation_loss_point_matches_hand_computation():
    e = math.e
    # Point 0 is covered by units a and b (c = 2), point 1 by a only (unit c is inactive).
    point0 = (0.5 * -math.log(1 / (1 + e)) + 2.0 * -math.log(e / (1 + e))) / 2
    point1 = 0.5 * -math.log(e ** 2 / (e ** 2 + 1)) / 1
    got = distillation_loss(LOGITS, MASKS, LABELS, CONF, CLASS_W, normalise="point")
    assert got.item() == pytest.approx((point0 + point1) / 2, rel=1e-6)


def test_distillation_loss_without_active_units_is_zero_with_graph():
    logits = LOGITS.clone().requires_grad_(True)
    loss = distillation_loss(logits, MASKS, LABELS, torch.zeros(3), CLASS_W)
    assert loss.item() == 0.0
    loss.backward()  # still differentiable
    assert distillation_loss(LOGITS, MASKS[:0], LABELS[:0], CONF[:0], CLASS_W).item() == 0.0


# --- class weights, Eq. 4, BD trigger ----------------------------------------------------------


def test_class_weights_hand_case():
    masks = np.zeros((3, 10), bool)
    masks[0, :6] = True  # part 0 covers 6 points
    masks[1, :2] = True  # part 1 covers 2
    masks[2, :4] = True  # part 2's unit has zero confidence: not counted
    units = make_units([0, 1, 2], masks, [0.7, 0.9, 0.0])
    w = class_weights(units, 3)
    # total 8 pairs; w = clip(1 + log4(8 / (3 * count)), 1, 4)
    expected = [1.0, 1 + math.log(8 / 6) / math.log(4), 4.0]
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    # few-shot labels are counted too: part 2 now has 8 of 16
    w2 = class_weights(units, 3, [np.array([2] * 8 + [-1])])
    assert w2[2] == pytest.approx(1.0)
    assert w2[1] == pytest.approx(1 + math.log(16 / 6) / math.log(4), rel=1e-6)
    np.testing.assert_array_equal(class_weights(make_units([], np.zeros((0, 4)), []), 2), [1, 1])


def test_rescore_units_hand_case():
    masks = np.array([[1, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    units = make_units([0, 1, 1], masks, [0.5, 0.5, 0.5])
    pred = np.array([0, 0, 0, 1, 1])
    # unit 0: 3 of its 4 points predicted 0; unit 1: 2 of 3 predicted 1; empty unit: 0
    np.testing.assert_allclose(rescore_units(pred, units), [0.75, 2 / 3, 0.0], rtol=1e-6)


def test_bd_confidence_part_relative_hand_case():
    masks = np.zeros((4, 10), bool)
    masks[0, :4] = True  # part 0, area 4
    masks[1, 4:6] = True  # part 0, area 2
    masks[2, 6:9] = True  # part 1, area 3
    masks[3, 9] = True  # part 1, area 1
    units = make_units([0, 0, 1, 1], masks, [0.5, 1.0, 0.8, 0.4])
    c_bd = np.array([0.6, 0.3, 0.2, 0.0])
    # part 0: weights area x C = 2, 2 -> mean C_bd 0.45; part 1: 2.4, 0.4 -> 0.48 / 2.8
    expected = [0.5 * 1.0, 1.0 * 0.3 / 0.45, 0.8 * 1.0, 0.0]
    np.testing.assert_allclose(bd_confidence(c_bd, units, 2), expected, rtol=1e-6)
    np.testing.assert_allclose(bd_confidence(c_bd, units, 2, "replace"), c_bd, rtol=1e-6)
    # A thin part whose right boxes all agree little keeps its teacher confidence.
    np.testing.assert_allclose(bd_confidence([0.2, 0.2, 0.9, 0.9], units, 2),
                               units.confidence, rtol=1e-6)
    with pytest.raises(ValueError, match="bd_weighting"):
        bd_confidence(c_bd, units, 2, "bogus")


def test_backward_trigger_on_synthetic_curve():
    losses = [5, 4, 3, 2, 1, 1, 1, 1, 1, 1, 1]
    # moving averages: e4 3.0 (the scale), e5 2.2, e6 1.6, e7 1.2, e8 1.0, e9 1.0
    assert plateau_epoch(losses, window=5, tau=0.01) == 9
    assert not backward_trigger(losses[:9], 5, 0.01)
    assert backward_trigger(losses[:10], 5, 0.01)
    assert not backward_trigger([1.0] * 5, 5, 0.01)  # needs two full windows
    assert plateau_epoch([1.0] * 6) == 5
    # a change just above tau * scale does not trigger, just below does
    slow = [1.0] * 5 + [1.0 - 0.05 * 1.01]
    assert not backward_trigger(slow, 5, 0.01)
    assert backward_trigger([1.0] * 5 + [1.0 - 0.05 * 0.99], 5, 0.01)
    # the paper's absolute threshold ignores the loss scale: a loss 100x larger with the
    # same relative shape never gets below tau = 0.01 in changes
    assert plateau_epoch(losses, 5, 0.01, relative=False) == 9
    big = [100 * v for v in losses[:9]] + [100 * 0.999] * 6
    assert plateau_epoch(big, 5, 0.01) is not None
    assert plateau_epoch(big[:11], 5, 0.01, relative=False) is None


def test_constant_lr_schedule_and_bad_choices():
    from partseg_cli.distill import check_config
    from partseg_cli.errors import PartsegError

    shape, gt = two_clusters(600)
    config = DistillConfig(**{**FAST.__dict__, "lr_schedule": "constant", "tau_mode": "absolute",
                              "bd_latest": None, "normalise": "eq3", "bd_weighting": "replace"})
    result = distill_tta(shape, partial_units(600), 2, config)
    assert (result.point_labels == gt).mean() > 0.95
    for bad in ({"lr_schedule": "step"}, {"tau_mode": "rel"}, {"bd_latest": 1.5},
                {"normalise": "unit"}):
        with pytest.raises(PartsegError, match="--"):
            check_config(DistillConfig(**bad))


# --- training ----------------------------------------------------------------------------


def test_tta_learns_separable_toy_and_labels_uncovered_points():
    shape, gt = two_clusters()
    units = partial_units(len(gt))
    covered = units.masks.any(axis=0)
    result = distill_tta(shape, units, 2, FAST)
    assert result.point_probs.shape == (len(gt), 2) and result.point_labels.dtype == np.int32
    np.testing.assert_allclose(result.point_probs.sum(axis=1), 1, rtol=1e-5)
    assert (result.point_labels[~covered] == gt[~covered]).mean() > 0.98
    assert (result.point_labels == gt).mean() > 0.98
    assert len(result.loss_history) == FAST.epochs
    assert result.bd_epoch is not None and result.rescored_confidence is not None
    np.testing.assert_allclose(result.rescored_confidence, 1.0, atol=0.02)


def test_backward_distillation_suppresses_a_wrong_unit():
    shape, gt = two_clusters()
    n = len(gt)
    units = partial_units(n)
    wrong = np.zeros((1, n), bool)
    wrong[0, n // 2 - 60:n // 2 - 20] = True  # a small unit on cluster 0 labelled 1
    units = make_units(np.r_[units.labels, 1], np.vstack([units.masks, wrong]),
                       np.r_[units.confidence, 0.9])
    result = distill_tta(shape, units, 2, FAST)
    assert result.rescored_confidence[3] < 0.2
    assert result.rescored_confidence[:3].min() > 0.9
    assert (result.point_labels == gt).mean() > 0.95


def test_tta_is_deterministic_given_seed():
    shape, _ = two_clusters(600)
    units = partial_units(600)
    a = distill_tta(shape, units, 2, FAST)
    b = distill_tta(shape, units, 2, FAST)
    np.testing.assert_array_equal(a.point_probs, b.point_probs)
    assert a.loss_history == b.loss_history
    c = distill_tta(shape, units, 2, DistillConfig(**{**FAST.__dict__, "seed": 1}))
    assert not np.array_equal(a.point_probs, c.point_probs)


def test_empty_units_give_a_labelling_and_a_warning():
    shape, gt = two_clusters(100)
    none = make_units([], np.zeros((0, 100)), [])
    with pytest.warns(UserWarning, match="no usable knowledge units"):
        result = distill_tta(shape, none, 3, FAST)
    assert result.no_units and result.point_labels.shape == (100,)
    np.testing.assert_allclose(result.point_probs, 1 / 3)
    zero_conf = make_units([0], np.ones((1, 100)), [0.0])
    with pytest.warns(UserWarning):
        assert distill_tta(shape, zero_conf, 2, FAST).no_units


def test_units_of_another_shape_are_rejected():
    shape, _ = two_clusters(100)
    with pytest.raises(InputError, match="masks have shape"):
        distill_tta(shape, make_units([0], np.ones((1, 50)), [1.0]), 2, FAST)
    with pytest.raises(InputError, match="labels outside"):
        distill_tta(shape, make_units([5], np.ones((1, 100)), [1.0]), 2, FAST)


def test_pre_alignment_labels_shapes_without_units_and_uses_fewshot_labels():
    shapes = [two_clusters(800, seed) for seed in range(3)]
    collection = [(s, partial_units(800)) for s, _ in shapes[:2]]
    collection.append((shapes[2][0], make_units([], np.zeros((0, 800)), [])))
    config = DistillConfig(mode="pre", device="cpu", epochs=12, n_sample=512, batch_size=2)
    with pytest.warns(UserWarning, match="1 of 3 shapes"):
        student, results = distill_pre(collection, 2, config)
    assert len(results) == 3 and results[2].no_units
    for (_, gt), result in zip(shapes[:2], results[:2], strict=True):
        assert (result.point_labels == gt).mean() > 0.97
    # The unit-less shape is labelled by what the student learnt on the others (random
    # blobs share little beyond the side they sit on, so only better than chance).
    assert (results[2].point_labels == shapes[2][1]).mean() > 0.65
    assert results[2].rescored_confidence is None and results[0].rescored_confidence is not None
    np.testing.assert_allclose(student.predict(shapes[2][0]), results[2].point_probs, atol=1e-5)

    # Few-shot: only a labelled shape teaches part 1 on the right; the units say nothing.
    left_only = [(s, make_units([0], partial_units(800).masks[:1], [0.9])) for s, _ in shapes]
    labelled = [(shapes[0][0], shapes[0][1])]
    with pytest.warns(UserWarning, match="1 of 3"):
        results = distill_collection([(s, u) for s, u in left_only[1:]] +
                                     [(shapes[2][0], make_units([], np.zeros((0, 800)), []))],
                                     2, config, labelled)
    right = shapes[1][1] == 1
    # Part 1 is learnt from the labelled shape only, and lands on the right cluster; on
    # random blobs the transfer to another shape is partial.
    on_right = (results[0].point_labels[right] == 1).mean()
    on_left = (results[0].point_labels[~right] == 1).mean()
    assert on_right > 0.1 and on_right > 3 * on_left


def test_trainable_encoder_path():
    shape, gt = two_clusters(600)
    config = DistillConfig(**{**FAST.__dict__, "encoder": "pointnet", "lr": 1e-2})
    result = distill_tta(shape, partial_units(600), 2, config)
    assert (result.point_labels == gt).mean() > 0.95


def test_tta_on_real_shapenetpart_cap():
    rows = np.loadtxt(shared_data("shapenetpart", "02954340", "test_000.txt"), dtype=np.float32)
    pts = rows[:, :3] - rows[:, :3].mean(axis=0)
    pts /= np.linalg.norm(pts, axis=1).max()
    gt = rows[:, 6].astype(int) - 6  # Cap parts are global ids 6 (panels), 7 (peak)
    shape = PointCloud(pts, rows[:, 3:6], np.full_like(pts, 0.5))
    # Teacher-like units: spatial patches around points of each part, keeping 80% of
    # the patch's points of that part plus leaking 10% of the others.
    rng = np.random.default_rng(0)
    masks, labels = [], []
    for part in (0, 1):
        for seed_point in rng.choice(np.flatnonzero(gt == part), 6, replace=False):
            near = np.linalg.norm(pts - pts[seed_point], axis=1) < 0.35
            keep = near & (((gt == part) & (rng.random(len(gt)) < 0.8))
                           | ((gt != part) & (rng.random(len(gt)) < 0.1)))
            masks.append(keep)
            labels.append(part)
    units = make_units(labels, masks, rng.uniform(0.5, 0.9, len(labels)))
    result = distill_tta(shape, units, 2, DistillConfig(device="cpu"))
    ious = [((result.point_labels == p) & (gt == p)).sum() / ((result.point_labels == p)
                                                             | (gt == p)).sum() for p in (0, 1)]
    assert np.mean(ious) > 0.8


# --- encoders ----------------------------------------------------------------------------


def test_pointnn_encoder_shapes_and_determinism():
    enc = build_encoder("pointnn")
    pts = torch.rand(2, 700, 3) * 2 - 1
    with torch.no_grad():
        a, b = enc(pts), enc(pts)
    assert a.shape == (2, 700, enc.out_dim) and torch.equal(a, b)
    assert torch.isfinite(a).all()
    tiny = enc(torch.rand(1, 5, 3))  # fewer points than centres / neighbours
    assert tiny.shape == (1, 5, enc.out_dim) and torch.isfinite(tiny).all()


def test_encoder_checkpoint_mismatch_raises_model_error(tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.save(PointNetEncoder(width=(32, 128)).state_dict(), wrong)
    shapes_msg = r"mlp\.0\.weight has shape \(32, 24\), expected \(64, 24\)"
    with pytest.raises(ModelError, match=shapes_msg):
        build_encoder("pointnet", str(wrong))
    extra = tmp_path / "extra.pt"
    torch.save({"state_dict": {**PointNetEncoder().state_dict(), "x": torch.zeros(1)}}, extra)
    with pytest.raises(ModelError, match="unexpected x"):
        build_encoder("pointnet", str(extra))
    with pytest.raises(ModelError, match="not found"):
        build_encoder("pointnet", str(tmp_path / "missing.pt"))
    with pytest.raises(ModelError, match="choose from pointnn, pointnet"):
        build_encoder("point-m2ae")
    good = tmp_path / "good.pt"
    torch.save({"model_state_dict": PointNetEncoder().state_dict()}, good)
    enc = build_encoder("pointnet", str(good))
    assert not enc.trainable and not any(p.requires_grad for p in enc.parameters())


def test_frozen_features_are_standardised_per_shape():
    from partseg_cli.models.student import Head, Student

    enc = build_encoder("pointnn")
    student = Student(enc, Head(enc.out_dim, 2, (8,)), shape_standardise=True)
    shape, _ = two_clusters(400)
    pts, nrm, col = (torch.as_tensor(a) for a in (shape.points, shape.normals, shape.colors))
    feats = student.encode(pts, nrm, col)
    varying = enc(pts[None], nrm[None], col[None])[0].std(0) > 1e-3
    torch.testing.assert_close(feats.mean(0), torch.zeros(enc.out_dim), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.std(0)[varying], torch.ones(int(varying.sum())),
                               atol=1e-4, rtol=0)
    raw = Student(enc, Head(enc.out_dim, 2, (8,))).encode(pts, nrm, col)
    torch.testing.assert_close(raw, enc(pts[None], nrm[None], col[None])[0])


def test_pre_alignment_epoch_visits_every_shape_and_pool_fits_the_budget():
    from partseg_cli.distill import feature_pool_size, pre_steps_per_epoch, train_student

    config = DistillConfig(mode="pre", device="cpu", batch_size=16, steps_per_epoch=1)
    assert [pre_steps_per_epoch(n, config) for n in (1, 16, 17, 100)] == [1, 1, 2, 7]
    assert pre_steps_per_epoch(4, DistillConfig(steps_per_epoch=3)) == 3
    # 600 shapes x 360 dims x 2 bytes x 4096 points would be 1.7 GB: the pool shrinks
    assert feature_pool_size(10, 360, config) == 4096
    assert feature_pool_size(600, 360, config) == int(1024 * 2**20 / (600 * 360 * 2))
    assert feature_pool_size(10**6, 360, config) == config.n_sample
    shapes = [two_clusters(600, seed) for seed in range(5)]
    trained = train_student([(s, partial_units(600)) for s, _ in shapes], 2,
                            DistillConfig(mode="pre", device="cpu", epochs=3, n_sample=256,
                                          batch_size=2, steps_per_epoch=1, backward=False))
    assert trained.steps == 3 * 3 and len(trained.losses) == 3


def test_dgcnn_student_learns_and_round_trips_through_its_folder(tmp_path):
    from partseg_cli.distill import load_student, save_student, train_student

    shapes = [two_clusters(1000, seed) for seed in range(2)]
    config = DistillConfig(mode="pre", device="cpu", encoder="dgcnn", epochs=10, n_sample=512,
                           batch_size=2, steps_per_epoch=2, lr=3e-3, backward=False)
    trained = train_student([(s, partial_units(1000)) for s, _ in shapes], 2, config)
    probs = trained.student.predict(shapes[0][0])  # 1000 points: two 500-point passes
    assert (probs.argmax(1) == shapes[0][1]).mean() > 0.9
    save_student(tmp_path / "s", trained, config, ["left", "right"], "k", {"a": "x", "b": "y"},
                 [])
    loaded = load_student(tmp_path / "s")
    assert loaded.student.encoder.trainable and loaded.part_names == ["left", "right"]
    np.testing.assert_allclose(loaded.student.predict(shapes[0][0]), probs, atol=1e-5)



def test_feature_copies_train_on_augmented_shapes_and_keep_the_collection_order():
    from partseg_cli.distill import train_student

    shapes = [two_clusters(600, seed) for seed in range(2)]
    config = DistillConfig(mode="pre", device="cpu", epochs=3, n_sample=256, batch_size=2,
                           steps_per_epoch=1, feature_copies=2)
    trained = train_student([(s, partial_units(600)) for s, _ in shapes], 2, config)
    assert trained.steps == 3 * 3  # 6 items (2 shapes + 4 copies), 2 per step
    assert len(trained.rescored) == 2 and all(len(r) == 3 for r in trained.rescored)
    plain = train_student([(s, partial_units(600)) for s, _ in shapes], 2,
                          dataclasses.replace(config, feature_copies=0))
    assert plain.steps == 3 and plain.losses != trained.losses
    with pytest.raises(PartsegError, match="feature-copies"):
        train_student([(s, partial_units(600)) for s, _ in shapes], 2,
                      dataclasses.replace(config, feature_copies=-1))

"""Teacher metrics (partseg_cli/teacher_metrics.py) on hand-made cases: pooling of box
verdicts over shapes, and the purity-from-features R^2 leak detector."""

from __future__ import annotations

import math

import numpy as np
import pytest

from partseg_cli.records import Boxes
from partseg_cli.teacher_metrics import (
    BoxVerdicts,
    box_purity,
    cv_r2,
    judge_boxes,
    pooled_box_scores,
    purity_r2,
)


def test_pooled_box_scores_pool_boxes_not_shapes():
    a = BoxVerdicts(np.array([True, True, False]), np.array([0.9, 0.8, 0.1]), 2, 2)
    b = BoxVerdicts(np.array([False]), np.array([0.95]), 0, 3)
    scores = pooled_box_scores([a, b])
    assert scores["precision"] == pytest.approx(2 / 4)  # not the mean of 2/3 and 0
    assert scores["recall"] == pytest.approx(2 / 5)
    # right boxes 0.9, 0.8 vs wrong 0.1, 0.95: 2 of 4 pairs ordered
    assert scores["auroc"] == pytest.approx(0.5)
    assert math.isnan(scores["auroc_after"])  # nothing was re-scored
    assert all(math.isnan(v) for v in pooled_box_scores([]).values())


def test_judge_boxes_carries_the_verdicts_to_rescored_units():
    gt = np.full((1, 20, 20), -1, np.int32)
    gt[0, 2:10, 2:10] = 0
    gt[0, 12:18, 2:18] = 1
    xyxy = np.array([[2, 2, 10, 10], [2, 12, 18, 18], [2, 2, 18, 18]], np.float32)
    verdicts = judge_boxes(gt, np.zeros(3, int), xyxy, np.array([0, 1, 1]),
                           np.array([0.5, 0.5, 0.9]), 2,
                           unit_box=np.array([2, 0, 1]), rescored=np.array([0.1, 0.7, 0.8]))
    np.testing.assert_array_equal(verdicts.right, [True, True, False])
    np.testing.assert_array_equal(verdicts.unit_right, [False, True, True])
    scores = pooled_box_scores([verdicts])
    assert scores["auroc"] == 0.0  # the wrong box has the highest confidence
    assert scores["auroc_after"] == 1.0  # re-scoring put it last
    assert (verdicts.recalled, verdicts.counted) == (2, 2)


def test_purity_r2_detects_features_that_encode_the_truth():
    rng = np.random.default_rng(0)
    gts, leaky, honest = [], [], []
    for _ in range(6):
        gt = np.full((2, 40, 40), -1, np.int32)
        gt[:, 5:35, 5:20] = 0
        gt[:, 5:35, 20:35] = 1
        x0 = rng.uniform(0, 30, 40)
        xyxy = np.stack([x0, np.full(40, 5.0), x0 + 10, np.full(40, 35.0)], 1)
        view, label = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
        purity = box_purity(gt, view, xyxy, label)
        probs = np.eye(2, dtype=np.float32)[label]
        gts.append(gt)
        for out, feats in ((leaky, np.c_[purity, rng.normal(size=(40, 3))]),
                           (honest, rng.normal(size=(40, 4)))):
            out.append(Boxes(view=view.astype(np.int32), xyxy=xyxy.astype(np.float32),
                             part_probs=probs, confidence=np.ones(40, np.float32),
                             features=feats.astype(np.float32)))
    assert purity_r2(gts, leaky) > 0.9
    assert purity_r2(gts, honest) < 0.1
    # a single group cannot be cross-validated
    assert math.isnan(cv_r2(np.ones((3, 1)), np.arange(3.0), np.zeros(3)))


def test_cv_r2_does_not_extrapolate_a_unit_silent_on_the_training_folds():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(5), 20)
    target = rng.uniform(size=100)
    features = np.c_[target + rng.normal(0, 0.1, 100), np.zeros(100)]
    features[0, 1] = 1e-4 * target[0]  # a ReLU unit nearly silent on four shapes ...
    features[groups == 4, 1] = 5.0  # ... that fires on the fifth
    assert cv_r2(features, target, groups) > 0.5

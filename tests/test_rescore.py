"""Tests for the rescore stage functions (backward distillation, Eq. 4)."""

from __future__ import annotations

import numpy as np
import pytest

from partseg_cli.distill import DistillConfig, PointCloud
from partseg_cli.records import KnowledgeUnits
from partseg_cli.rescore import rescore, rescore_collection, rescore_units

CONFIG = DistillConfig(device="cpu", epochs=12, steps_per_epoch=2, n_sample=512,
                       backward=False, bd_latest=None)


def blobs(n: int = 1000, seed: int = 0) -> tuple[PointCloud, np.ndarray]:
    rng = np.random.default_rng(seed)
    half = n // 2
    pts = np.concatenate([rng.normal(size=(half, 3)) * 0.12 + [-0.5, 0, 0],
                          rng.normal(size=(half, 3)) * 0.12 + [0.5, 0, 0]]).astype(np.float32)
    return PointCloud(pts, np.zeros_like(pts), np.full_like(pts, 0.5)), np.repeat([0, 1], half)


def units_with_a_wrong_one(n: int) -> KnowledgeUnits:
    """Three right units (left = 0, right = 1) and a small wrong one inside unit 0."""
    half = n // 2
    masks = np.zeros((4, n), bool)
    masks[0, :200] = True
    masks[1, half:half + 200] = True
    masks[2, half + 100:half + 300] = True
    masks[3, 150:190] = True  # inside unit 0: the units disagree there
    return KnowledgeUnits(np.array([0, 1, 1, 1], np.int32), masks,
                          np.array([0.8, 0.7, 0.6, 0.5], np.float32), np.zeros(4, np.int32),
                          np.arange(4, dtype=np.int32), source="boxes")


def test_rescore_sets_rescored_confidence_and_keeps_the_rest():
    shape, _ = blobs()
    units = units_with_a_wrong_one(1000)
    # backward=False / bd_latest=None in the config: rescore turns BD on regardless.
    out = rescore(shape, units, 2, CONFIG)
    assert out.rescored_confidence.shape == (4,) and out.rescored_confidence.dtype == np.float32
    assert out.rescored_confidence[3] < 0.2  # the wrong unit is suppressed
    assert out.rescored_confidence[:3].min() > 0.9
    np.testing.assert_array_equal(out.confidence, units.confidence)
    np.testing.assert_array_equal(out.masks, units.masks)
    assert out.source == "boxes" and units.rescored_confidence is None


def test_rescore_collection_pre_and_tta():
    items = [blobs(600, seed) for seed in range(2)]
    collection = [(shape, units_with_a_wrong_one(600)) for shape, _ in items]
    for mode in ("tta", "pre"):
        config = DistillConfig(**{**CONFIG.__dict__, "mode": mode, "batch_size": 2})
        out = rescore_collection(collection, 2, config)
        assert len(out) == 2
        for units in out:
            assert units.rescored_confidence[3] < 0.3
            assert units.rescored_confidence[:3].min() > 0.85


def test_rescore_without_units_keeps_confidence():
    shape, _ = blobs(50)
    none = KnowledgeUnits(np.zeros(0, np.int32), np.zeros((0, 50), bool),
                          np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(0, np.int32))
    with pytest.warns(UserWarning):
        out = rescore(shape, none, 2, CONFIG)
    assert out.rescored_confidence.shape == (0,)


def test_rescore_units_is_reexported():
    units = units_with_a_wrong_one(10)
    pred = np.zeros(10, int)
    np.testing.assert_allclose(rescore_units(pred, units)[[0, 3]], [1.0, 0.0])

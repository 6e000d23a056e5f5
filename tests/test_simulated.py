"""Tests of the simulated teacher (a measuring instrument reading the ground truth to place
its boxes, never to score them)."""

from __future__ import annotations

import numpy as np
import pytest
from shared_data import shared_data

from partseg_cli import simulated, teacher_metrics
from partseg_cli.errors import InputError, PartsegError

NAMES = ["body", "leg"]


def two_part_image(views: int = 2) -> np.ndarray:
    """(V, 60, 80) label images: a 30x40 'body' (part 0) and two 20x6 'legs' (part 1)."""
    gt = np.full((views, 60, 80), -1, np.int32)
    gt[:, 5:35, 10:50] = 0
    gt[:, 38:58, 12:18] = 1
    gt[:, 38:58, 40:46] = 1
    return gt


def box_majority(gt: np.ndarray, boxes) -> tuple[np.ndarray, np.ndarray]:
    """(B,) majority ground-truth label in each box (-1 when empty) and its share."""
    major, share = [], []
    for v, box in zip(boxes.view, boxes.xyxy, strict=True):
        x0, y0 = np.floor(box[:2]).astype(int)
        x1, y1 = np.ceil(box[2:]).astype(int)
        crop = gt[v, y0:y1, x0:x1]
        crop = crop[crop >= 0]
        if crop.size == 0:
            major.append(-1)
            share.append(0.0)
            continue
        counts = np.bincount(crop)
        major.append(int(counts.argmax()))
        share.append(counts.max() / crop.size)
    return np.array(major), np.array(share)


def test_deterministic_and_seed_dependent():
    gt = two_part_image(3)
    a = simulated.simulate_boxes(gt, 2, NAMES, seed=5)
    b = simulated.simulate_boxes(gt, 2, NAMES, seed=5)
    c = simulated.simulate_boxes(gt, 2, NAMES, seed=6)
    for field in ("view", "xyxy", "part_probs", "confidence", "features"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert len(a) != len(c) or not np.allclose(a.xyxy, c.xyxy)
    pa = simulated.simulate_pixel_maps(gt, 2, NAMES, seed=5).probs
    np.testing.assert_array_equal(pa, simulated.simulate_pixel_maps(gt, 2, NAMES, seed=5).probs)
    assert not np.array_equal(pa, simulated.simulate_pixel_maps(gt, 2, NAMES, seed=6).probs)
    ma = simulated.simulate_masks(gt, a, seed=1).masks
    np.testing.assert_array_equal(ma, simulated.simulate_masks(gt, a, seed=1).masks)


def test_views_are_independent():
    # Noise is drawn per view: simulating a view alone gives the same boxes.
    gt = two_part_image(3)
    all_views = simulated.simulate_boxes(gt, 2, NAMES, seed=3)
    alone = simulated.simulate_boxes(gt[:1], 2, NAMES, seed=3)
    np.testing.assert_allclose(all_views.xyxy[all_views.view == 0], alone.xyxy)


def test_boxes_inside_image_and_well_formed():
    gt = two_part_image(4)
    for seed in range(10):
        boxes = simulated.simulate_boxes(gt, 2, NAMES, preset="weak", seed=seed, feature_dim=16)
        assert boxes.xyxy.dtype == np.float32 and boxes.features.shape == (len(boxes), 16)
        assert np.all(boxes.xyxy[:, :2] >= 0) and np.all(boxes.xyxy[:, 2] <= 80)
        assert np.all(boxes.xyxy[:, 3] <= 60)
        assert np.all(boxes.xyxy[:, 2:] > boxes.xyxy[:, :2])
        np.testing.assert_allclose(boxes.part_probs.sum(axis=1), 1.0, rtol=1e-5)
        # The chosen label is strictly the most probable part.
        top2 = np.sort(boxes.part_probs, axis=1)[:, -2:]
        assert np.all(top2[:, 1] > top2[:, 0])
        assert np.all((boxes.confidence >= 0) & (boxes.confidence <= 1))


def test_clean_preset_boxes_match_components():
    gt = two_part_image(1)
    boxes = simulated.simulate_boxes(gt, 2, NAMES, preset="clean")
    order = np.lexsort((boxes.xyxy[:, 0], boxes.labels))
    np.testing.assert_array_equal(boxes.labels[order], [0, 1, 1])
    # Pixel-corner XYXY of each component: columns 10..49 -> x in [10, 50], etc.
    np.testing.assert_allclose(boxes.xyxy[order], [[10, 5, 50, 35], [12, 38, 18, 58],
                                                   [40, 38, 46, 58]])
    assert np.all(boxes.confidence > 0.9)
    assert boxes.teacher == "simulated:clean" and boxes.part_names == NAMES


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) IoU of XYXY boxes."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


# Component boxes of two_part_image, and the box of both legs merged.
TRUE_BOXES = np.array([[10, 5, 50, 35], [12, 38, 18, 58], [40, 38, 46, 58], [12, 38, 46, 58]])


def test_glip_like_makes_wrong_labels_and_false_positives():
    gt = two_part_image(10)
    wrong = false_pos = total = 0
    for seed in range(10):
        boxes = simulated.simulate_boxes(gt, 2, NAMES, seed=seed)
        major, share = box_majority(gt, boxes)
        wrong += np.count_nonzero((major >= 0) & (major != boxes.labels) & (share > 0.8))
        false_pos += np.count_nonzero(iou(boxes.xyxy, TRUE_BOXES).max(axis=1) < 0.3)
        total += len(boxes)
    assert 0.05 * total < wrong < 0.5 * total
    assert false_pos > 0.03 * total


def test_small_components_detected_less_often():
    gt = np.full((40, 100, 100), -1, np.int32)
    gt[:, 10:70, 10:70] = 0  # 3600 px
    gt[:, 80:86, 80:86] = 1  # 36 px
    big = small = 0
    cfg = simulated.PRESETS["glip-like"]
    cfg = simulated.TeacherPreset(**{**cfg.__dict__, "confusion_prob": 0.0,
                                     "false_positives": 0.0, "whole_object_prob": 0.0})
    for seed in range(3):
        boxes = simulated.simulate_boxes(gt, 2, NAMES, preset=cfg, seed=seed)
        big += np.count_nonzero(boxes.labels == 0)
        small += np.count_nonzero(boxes.labels == 1)
    assert big > 0.7 * 120 and small < 0.5 * big


def test_confidence_informative_but_overlapping():
    gt = two_part_image(10)
    right, wrong = [], []
    for seed in range(10):
        boxes = simulated.simulate_boxes(gt, 2, NAMES, seed=seed)
        major, share = box_majority(gt, boxes)
        ok = (major == boxes.labels) & (share > 0.8)
        right.append(boxes.confidence[ok])
        wrong.append(boxes.confidence[~ok])
    right, wrong = np.concatenate(right), np.concatenate(wrong)
    assert right.mean() > wrong.mean() + 0.05
    # Overlap: some wrong boxes score above the median right box.
    assert np.any(wrong > np.median(right))


def hollow_body(gt: np.ndarray) -> np.ndarray:
    """gt with an interior block of the body unlabelled: the body keeps its outline, its
    pixels on screen do not change (unlabelled points still render), but the purity of the
    boxes over it does."""
    hollow = gt.copy()
    hollow[:, 12:30, 18:42] = -1
    return hollow


@pytest.mark.parametrize("preset", ["glip-like", "weak"])
def test_scores_blind_to_ground_truth_purity(preset):
    gt = two_part_image(6)
    foreground = gt >= 0  # the silhouette: what the renderer shows, unchanged below
    rng = np.random.default_rng(0)
    images = np.where(foreground[..., None], rng.integers(0, 200, (*gt.shape, 3)), 255)
    images = images.astype(np.uint8)
    hollow = hollow_body(gt)
    purity_changed = False
    for seed in range(4):
        kwargs = dict(preset=preset, seed=seed, images=images, foreground=foreground,
                      category="Chair")
        a = simulated.simulate_boxes(gt, 2, NAMES, **kwargs)
        b = simulated.simulate_boxes(hollow, 2, NAMES, **kwargs)
        for field in ("view", "xyxy", "part_probs", "confidence", "features"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        purity_a = teacher_metrics.box_purity(gt, a.view, a.xyxy, a.labels)
        purity_b = teacher_metrics.box_purity(hollow, a.view, a.xyxy, a.labels)
        purity_changed |= bool(np.any(np.abs(purity_a - purity_b) > 0.05))
    assert purity_changed


def test_leaky_preset_scores_read_purity():
    # The test above can fail: the leaky instrument's scores move with purity alone.
    gt = two_part_image(6)
    kwargs = dict(preset="glip-like-leaky", seed=1, foreground=gt >= 0)
    a = simulated.simulate_boxes(gt, 2, NAMES, **kwargs)
    b = simulated.simulate_boxes(hollow_body(gt), 2, NAMES, **kwargs)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    assert not np.array_equal(a.confidence, b.confidence)
    assert not np.array_equal(a.features, b.features)


def test_features_follow_the_pixels():
    # Same boxes, other pixels inside them: the appearance dims change, the geometry does not.
    gt = two_part_image(2)
    grey = np.where((gt >= 0)[..., None], 128, 255).astype(np.uint8).repeat(3, axis=-1)
    red = grey.copy()
    red[gt == 0] = (220, 30, 30)
    a = simulated.simulate_boxes(gt, 2, NAMES, seed=3, images=grey)
    b = simulated.simulate_boxes(gt, 2, NAMES, seed=3, images=red)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.features[:, :4], b.features[:, :4])  # centre, size
    assert not np.allclose(a.features, b.features)


def three_part_image(views: int) -> np.ndarray:
    """(V, 60, 90) label images: three separate 30x20 blocks, parts 0, 1, 2."""
    gt = np.full((views, 60, 90), -1, np.int32)
    for p in range(3):
        gt[:, 15:45, 5 + 30 * p:25 + 30 * p] = p
    return gt


def test_confusions_are_systematic():
    names = ["a", "b", "c"]
    model = simulated.confusion_model("Thing", names)
    again = simulated.confusion_model("Thing", names)
    np.testing.assert_array_equal(model.target, again.target)
    assert not np.array_equal(model.target, simulated.confusion_model("Other", names).target)
    gt = three_part_image(10)
    per_shape, wrong_names = [], []
    for seed in range(40):  # 40 shapes of one category, 10 views each
        boxes = simulated.simulate_boxes(gt, 3, names, seed=seed, category="Thing")
        major, share = box_majority(gt, boxes)
        own = (major == 0) & (share > 0.8)
        per_shape.append(np.mean(boxes.labels[own] != 0))
        wrong_names.extend(boxes.labels[own & (boxes.labels != 0)])
    # Across shapes the wrong names of part "a" go where the category's matrix says ...
    counts = np.bincount(wrong_names, minlength=3)
    assert counts.argmax() == model.target[0].argmax()
    # ... and a shape's confusion rate holds over its views: the rates vary between shapes
    # far more than independent per-view draws (binomial, 10 boxes) would make them.
    rate = np.mean(per_shape)
    assert np.var(per_shape) > 2 * rate * (1 - rate) / 10


def test_some_whole_object_boxes_survive_the_filter():
    from partseg_cli.backproject import units_from_boxes

    gt = two_part_image(30)
    cfg = simulated.PRESETS["glip-like"]
    cfg = simulated.TeacherPreset(**{**cfg.__dict__, "whole_object_prob": 1.0,
                                     "false_positives": 0.0, "detect_max": 0.0})
    boxes = simulated.simulate_boxes(gt, 2, NAMES, preset=cfg, seed=0)
    assert len(boxes) == 30  # one whole-object box per view, nothing else
    pixel_point = np.full(gt.shape, -1, np.int32)
    pixel_point[gt >= 0] = np.arange(np.count_nonzero(gt >= 0))
    units = units_from_boxes(boxes, pixel_point, np.count_nonzero(gt >= 0))
    assert 0 < len(units) < len(boxes)


def test_box_purity():
    gt = two_part_image(1)
    boxes = np.array([[10, 5, 50, 35], [10, 5, 50, 58], [60, 0, 80, 10]], np.float32)
    purity = teacher_metrics.box_purity(gt, np.zeros(3, int), boxes, np.array([0, 1, 0]))
    np.testing.assert_allclose(purity, [1.0, 240 / 1440, 0.0])


def test_masks_one_per_box_mostly_inside():
    gt = two_part_image(4).repeat(3, axis=1).repeat(3, axis=2)  # 180x240: boundary noise
    boxes = simulated.simulate_boxes(gt, 2, NAMES, seed=2)  # is in pixels
    masks = simulated.simulate_masks(gt, boxes, seed=2)
    assert masks.masks.shape == (len(boxes), 180, 240) and masks.masks.dtype == bool
    assert masks.scores.shape == (len(boxes),)
    inside = np.zeros_like(masks.masks)
    lo, hi = np.floor(boxes.xyxy[:, :2]).astype(int), np.ceil(boxes.xyxy[:, 2:]).astype(int)
    for b, ((x0, y0), (x1, y1)) in enumerate(zip(lo, hi, strict=True)):
        inside[b, y0:y1, x0:x1] = True
    area = masks.masks.sum(axis=(1, 2))
    assert np.count_nonzero(area) >= 0.8 * len(boxes)
    frac = (masks.masks & inside).sum(axis=(1, 2)) / np.maximum(area, 1)
    assert np.all(frac[area > 0] > 0.6) and np.mean(frac[area > 0]) > 0.85


def test_clean_masks_are_the_component():
    gt = two_part_image(1)
    boxes = simulated.simulate_boxes(gt, 2, NAMES, preset="clean")
    masks = simulated.simulate_masks(gt, boxes, preset="clean")
    for b in range(len(boxes)):
        truth = gt[0] == boxes.labels[b]
        x0, y0, x1, y1 = boxes.xyxy[b].astype(int)
        inbox = np.zeros_like(truth)
        inbox[y0:y1, x0:x1] = True
        np.testing.assert_array_equal(masks.masks[b], truth & inbox)


def test_pixel_maps_shape_range_and_noise():
    gt = two_part_image(3)
    clean = simulated.simulate_pixel_maps(gt, 2, NAMES, preset="clean").probs
    assert clean.shape == (3, 60, 80, 2) and clean.dtype == np.float16
    assert np.array_equal(clean.argmax(-1)[gt >= 0], gt[gt >= 0])
    assert np.all(clean[gt < 0] == 0)
    noisy = simulated.simulate_pixel_maps(gt, 2, NAMES, preset="weak", seed=1).probs
    p = noisy.astype(np.float32)
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p[gt >= 0].sum(-1), 1.0, atol=2e-3)
    assert (p[gt < 0].sum(-1) > 0.05).any()  # background spill
    acc = np.mean(p.argmax(-1)[gt >= 0] == gt[gt >= 0])
    assert 0.3 < acc < 0.99


def test_refuses_unlabelled():
    pixel_point = np.zeros((1, 4, 4), np.int32)
    with pytest.raises(InputError, match="ground-truth"):
        simulated.ground_truth_images(pixel_point, None, "chair.obj")
    with pytest.raises(PartsegError):
        simulated.simulate_boxes(np.full((1, 4, 4), -1, np.int32), 2, NAMES)
    with pytest.raises(PartsegError, match="glip-like"):
        simulated.simulate_boxes(two_part_image(1), 2, NAMES, preset="nope")
    gt = simulated.ground_truth_images(np.array([[[-1, 0], [1, 2]]]), np.array([1, -1, 0]))
    np.testing.assert_array_equal(gt, [[[-1, 1], [-1, 0]]])




def test_on_rendered_labeleddb_chair():
    from partseg_cli import render, shapes

    sources, _ = shapes.discover(shared_data("labeleddb", "Chair"))
    shape = shapes.load_shape(sources[0], n_points=3000)
    views = render.render_shape(shape, render.reference_cameras(3, 160))
    gt = simulated.ground_truth_images(views.pixel_point, shape.point_labels, shape.source)
    np.testing.assert_array_equal(gt, render.label_images(views, shape.point_labels))
    n_parts, names = len(shape.part_names), shape.part_names
    fg = views.pixel_point >= 0

    def miou(boxes):
        regions = teacher_metrics.box_regions(boxes.xyxy, boxes.view, fg)
        return teacher_metrics.teacher_miou_2d(gt, regions, boxes.view, boxes.labels,
                                               boxes.confidence, n_parts)

    clean = simulated.simulate_boxes(gt, n_parts, names, "clean")
    major, _ = box_majority(gt, clean)
    assert np.mean(major == clean.labels) > 0.8
    noisy = [miou(simulated.simulate_boxes(gt, n_parts, names, seed=s)) for s in range(3)]
    assert miou(clean) > np.mean(noisy) + 0.2
    masks = simulated.simulate_masks(gt, clean, preset="clean")
    assert masks.masks.shape == (len(clean), 160, 160)

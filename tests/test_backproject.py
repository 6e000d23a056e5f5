"""Tests for lifting 2D predictions onto points (knowledge units)."""

from __future__ import annotations

import numpy as np
import pytest

from partseg_cli.backproject import (
    face_labels_from_points,
    point_pixel_centres,
    units_from_boxes,
    units_from_masks,
    units_from_pixel_maps,
    visible_points,
)
from partseg_cli.records import Boxes, Masks, PixelMaps

# One view, 3 rows x 6 columns. Points 0-5 own one pixel each; point 6 owns two
# pixels (row 2, columns 2-3); point 7 owns three (row 2, columns 4-5 and row 1, col 5).
PIXEL_POINT = np.array([[[0, 1, 2, -1, -1, -1],
                         [3, 4, 5, -1, -1, 7],
                         [-1, -1, 6, 6, 7, 7]]], np.int32)
N_POINTS = 9  # point 8 is never seen


def make_boxes(xyxy, labels, view=None, n_parts=2) -> Boxes:
    n = len(xyxy)
    probs = np.full((n, n_parts), 0.1, np.float32)
    probs[np.arange(n), labels] = 0.9
    return Boxes(view=np.zeros(n, np.int32) if view is None else np.asarray(view, np.int32),
                 xyxy=np.asarray(xyxy, np.float32), part_probs=probs,
                 confidence=np.linspace(0.6, 0.9, n).astype(np.float32),
                 features=np.zeros((n, 4), np.float32))


def test_visible_points():
    two_views = np.stack([PIXEL_POINT[0], np.full((3, 6), -1, np.int32)])
    two_views[1, 0, 0] = 8
    vis = visible_points(two_views, N_POINTS)
    assert vis.shape == (2, N_POINTS) and vis.dtype == bool
    np.testing.assert_array_equal(np.nonzero(vis[0])[0], np.arange(8))
    np.testing.assert_array_equal(np.nonzero(vis[1])[0], [8])


def test_point_pixel_centres():
    counts, centres = point_pixel_centres(PIXEL_POINT, N_POINTS)
    assert counts[0, 6] == 2 and counts[0, 7] == 3 and counts[0, 8] == 0
    np.testing.assert_allclose(centres[0, 0], [0.5, 0.5])
    np.testing.assert_allclose(centres[0, 6], [3.0, 2.5])  # columns 2 and 3
    np.testing.assert_allclose(centres[0, 7], [(4.5 + 5.5 + 5.5) / 3, (2.5 + 2.5 + 1.5) / 3])
    assert np.isnan(centres[0, 8]).all()


def test_box_over_known_pixels_gives_exact_points():
    # Box over columns 1-2, rows 0-1 (pixel corners): points 1, 2, 4, 5 exactly.
    # Point 6's centre x = 3.0 is on the box edge (inside); a box ending at x = 2.9 excludes it.
    boxes = make_boxes([[1, 0, 3, 2], [1, 0, 3, 3], [1, 0, 2.9, 3]], [1, 0, 1])
    units = units_from_boxes(boxes, PIXEL_POINT, N_POINTS)
    assert units.source == "boxes" and len(units) == 3
    np.testing.assert_array_equal(np.nonzero(units.masks[0])[0], [1, 2, 4, 5])
    np.testing.assert_array_equal(np.nonzero(units.masks[1])[0], [1, 2, 4, 5, 6])
    np.testing.assert_array_equal(np.nonzero(units.masks[2])[0], [1, 2, 4, 5])
    np.testing.assert_array_equal(units.labels, [1, 0, 1])
    np.testing.assert_allclose(units.confidence, boxes.confidence)
    np.testing.assert_array_equal(units.source_index, [0, 1, 2])


def test_whole_object_box_dropped():
    # The first box holds all 8 visible points (100% >= 98%) and is dropped; the second
    # holds 7 of 8 (87.5%) and is kept unless the fraction is lowered below that.
    boxes = make_boxes([[0, 0, 6, 3], [0, 0, 5, 3], [3, 0, 4, 1]], [0, 1, 0])
    units = units_from_boxes(boxes, PIXEL_POINT, N_POINTS)
    np.testing.assert_array_equal(units.source_index, [1])  # box 2 holds no point
    assert units.masks[0].sum() == 7 and not units.masks[0, 7]
    assert len(units_from_boxes(boxes, PIXEL_POINT, N_POINTS, whole_object_fraction=0.8)) == 0
    assert len(units_from_boxes(boxes, PIXEL_POINT, N_POINTS, whole_object_fraction=1.01)) == 2


def test_boxes_in_other_views():
    two_views = np.stack([PIXEL_POINT[0], np.full((3, 6), -1, np.int32)])
    two_views[1, :, 3:] = np.arange(9).reshape(3, 3)  # view 1 shows points 0-8 on the right
    boxes = make_boxes([[3, 0, 4, 3], [3, 0, 4, 3]], [0, 0], view=[1, 0])
    units = units_from_boxes(boxes, two_views, N_POINTS)
    np.testing.assert_array_equal(np.nonzero(units.masks[0])[0], [0, 3, 6])
    np.testing.assert_array_equal(units.view, [1, 0])
    np.testing.assert_array_equal(np.nonzero(units.masks[1])[0], [6])


def test_mask_unit_majority_of_pixels():
    mask = np.zeros((1, 3, 6), bool)
    mask[0, 0, 0] = True  # point 0
    mask[0, 2, 2] = True  # one of point 6's two pixels: half -> inside
    mask[0, 2, 4] = True  # one of point 7's three pixels: a third -> outside
    mask[0, 0, 4] = True  # background pixel: no point
    boxes = make_boxes([[0, 0, 6, 3]], [1])  # the box itself would be whole-object
    units = units_from_masks(boxes, Masks(masks=mask, scores=np.ones(1, np.float32)),
                             PIXEL_POINT, N_POINTS)
    assert units.source == "masks" and len(units) == 1
    np.testing.assert_array_equal(np.nonzero(units.masks[0])[0], [0, 6])
    assert units.labels[0] == 1


def test_whole_object_mask_dropped():
    mask = (PIXEL_POINT >= 0).copy()
    boxes = make_boxes([[0, 0, 6, 3]], [0])
    units = units_from_masks(boxes, Masks(masks=mask, scores=np.ones(1, np.float32)),
                             PIXEL_POINT, N_POINTS)
    assert len(units) == 0 and units.masks.shape == (0, N_POINTS)


def test_pixel_map_components():
    # 2 parts on a 3x6 view where every pixel shows its own point (index = row*6+col).
    pixel_point = np.arange(18, dtype=np.int32).reshape(1, 3, 6)
    pixel_point[0, 2, 5] = -1  # background pixel: ignored even though a part claims it
    probs = np.zeros((1, 3, 6, 2), np.float32)
    probs[0, :, :, 0] = 0.3  # nobody claims (max 0.3 < 0.5): background
    probs[0, 0:2, 0:2, 0] = 0.9  # component A of part 0: 4 pixels
    probs[0, 0, 5, 0] = 0.7  # component B of part 0: 1 pixel (too small at min_pixels=2)
    probs[0, 1:3, 3:6, 1] = 0.6  # component C of part 1 (5 foreground pixels)
    probs[0, 2, 3, 1] = 0.8
    maps = PixelMaps(probs=probs.astype(np.float16))
    units = units_from_pixel_maps(maps, pixel_point, 18, min_pixels=2)
    assert units.source == "pixels"
    order = np.argsort(units.labels)
    np.testing.assert_array_equal(units.labels[order], [0, 1])
    np.testing.assert_array_equal(np.nonzero(units.masks[order[0]])[0], [0, 1, 6, 7])
    np.testing.assert_array_equal(np.nonzero(units.masks[order[1]])[0], [9, 10, 11, 15, 16])
    np.testing.assert_allclose(units.confidence[order], [0.9, (0.6 * 4 + 0.8) / 5], atol=1e-3)
    # With min_pixels=1 the single-pixel component B is a unit too.
    units = units_from_pixel_maps(maps, pixel_point, 18, min_pixels=1)
    assert len(units) == 3
    assert any(np.array_equal(np.nonzero(m)[0], [5]) for m in units.masks)


def test_pixel_map_diagonal_pixels_connect():
    pixel_point = np.arange(9, dtype=np.int32).reshape(1, 3, 3)
    probs = np.zeros((1, 3, 3, 1), np.float16)
    probs[0, [0, 1, 2], [0, 1, 2], 0] = 1.0  # a diagonal line: one 8-connected component
    units = units_from_pixel_maps(PixelMaps(probs=probs), pixel_point, 9, min_pixels=1)
    assert len(units) == 1
    np.testing.assert_array_equal(np.nonzero(units.masks[0])[0], [0, 4, 8])


def test_face_labels_from_points():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [10, 0, 0], [11, 0, 0], [10, 1, 0]],
                        np.float32)
    faces = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    # Three points near each face; the near-origin ones are 2 x part 1 and 1 x part 0.
    points = np.array([[0.3, 0.3, 0], [0.4, 0.3, 0], [0.3, 0.4, 0],
                       [10.3, 0.3, 0], [10.4, 0.3, 0], [10.3, 0.4, 0]], np.float32)
    labels = np.array([1, 1, 0, -1, -1, -1], np.int32)
    np.testing.assert_array_equal(
        face_labels_from_points(points, labels, vertices, faces, k=3), [1, -1])
    # The nearest point alone decides with k=1: (0.3, 0.3) is closest to centroid (1/3, 1/3).
    np.testing.assert_array_equal(
        face_labels_from_points(points, labels, vertices, faces, k=1), [1, -1])
    probs = np.zeros((6, 3), np.float32)
    probs[:3, 0] = [0.2, 0.2, 0.9]  # sums: part 0 1.3, part 2 1.2 -> part 0
    probs[:3, 2] = [0.6, 0.6, 0.0]
    probs[3:, 2] = 1.0
    np.testing.assert_array_equal(
        face_labels_from_points(points, probs, vertices, faces, k=3), [0, 2])
    # k larger than the number of points is clamped.
    assert face_labels_from_points(points, probs, vertices, faces, k=50).shape == (2,)


@pytest.mark.parametrize("seed", [0, 1])
def test_box_units_match_bruteforce(seed):
    """Random map and boxes: vectorised units equal a per-point reference."""
    rng = np.random.default_rng(seed)
    n = 40
    pixel_point = rng.integers(-1, n, (3, 20, 30)).astype(np.int32)
    xyxy = np.sort(rng.uniform(0, 30, (12, 2)), axis=1)
    ys = np.sort(rng.uniform(0, 20, (12, 2)), axis=1)
    boxes = make_boxes(np.stack([xyxy[:, 0], ys[:, 0], xyxy[:, 1], ys[:, 1]], 1),
                       rng.integers(0, 2, 12), view=rng.integers(0, 3, 12))
    units = units_from_boxes(boxes, pixel_point, n, whole_object_fraction=2.0)
    expected = []
    for b in range(12):
        v = boxes.view[b]
        row = np.zeros(n, bool)
        for p in range(n):
            r, c = np.nonzero(pixel_point[v] == p)
            if r.size:
                cx, cy = c.mean() + 0.5, r.mean() + 0.5
                x0, y0, x1, y1 = boxes.xyxy[b]
                row[p] = x0 <= cx <= x1 and y0 <= cy <= y1
        if row.any():
            expected.append(row)
    np.testing.assert_array_equal(units.masks, np.array(expected).reshape(-1, n))


def test_pixel_map_gaps_between_splats_are_bridged():
    # Two 2-pixel runs of part 0 on row 2, separated by one background pixel (column 3):
    # the splat gap joins them with gap_pixels=1 but not with 0.
    pixel_point = np.full((1, 5, 7), -1, np.int32)
    pixel_point[0, 2, [1, 2, 4, 5]] = [0, 1, 2, 3]
    probs = np.zeros((1, 5, 7, 2), np.float16)
    probs[0, 2, [1, 2, 4, 5], 0] = [0.9, 0.9, 0.7, 0.7]
    maps = PixelMaps(probs=probs)
    split = units_from_pixel_maps(maps, pixel_point, 4, min_pixels=1, gap_pixels=0)
    assert len(split) == 2
    joined = units_from_pixel_maps(maps, pixel_point, 4, min_pixels=1, gap_pixels=1)
    assert len(joined) == 1 and joined.masks[0].all()
    # The gap pixel joins the component but not its size: 4 foreground pixels.
    np.testing.assert_allclose(joined.confidence, [0.8], atol=1e-3)
    assert len(units_from_pixel_maps(maps, pixel_point, 4, min_pixels=5, gap_pixels=1)) == 0
    # A gap between different parts joins nothing.
    probs[0, 2, [4, 5]] = [[0.1, 0.7], [0.1, 0.7]]
    units = units_from_pixel_maps(PixelMaps(probs=probs), pixel_point, 4, min_pixels=1,
                                  gap_pixels=1)
    assert sorted(units.labels.tolist()) == [0, 1]


# --- Y^d: the teacher's part probabilities on every unit -------------------------------


def test_part_probs_of_box_and_mask_units():
    boxes = make_boxes([[0, 0, 6, 3], [1, 0, 3, 2], [3, 0, 4, 1]], [0, 1, 0])
    boxes.part_probs[1] = [0.3, 0.7]
    units = units_from_boxes(boxes, PIXEL_POINT, N_POINTS)  # box 0 whole-object, 2 empty
    np.testing.assert_array_equal(units.source_index, [1])
    np.testing.assert_allclose(units.part_probs, [[0.3, 0.7]])
    unit, point, probs = units.pair_probs()  # the box's Y^d on each of its points
    np.testing.assert_array_equal(point, [1, 2, 4, 5])
    np.testing.assert_allclose(probs, [[0.3, 0.7]] * 4)
    mask = np.zeros((3, 3, 6), bool)
    mask[0, 0, 0] = mask[1, 0, 1] = True
    units = units_from_masks(boxes, Masks(masks=mask, scores=np.ones(3, np.float32)),
                             PIXEL_POINT, N_POINTS)
    np.testing.assert_array_equal(units.source_index, [0, 1])
    np.testing.assert_allclose(units.part_probs, boxes.part_probs[:2])


def test_part_probs_of_pixel_units_per_point():
    # Point 0 owns pixels (0, 0) and (0, 1), point 1 pixel (0, 2); all claimed by part 1.
    pixel_point = np.array([[[0, 0, 1]]], np.int32)
    probs = np.zeros((1, 1, 3, 2), np.float32)
    probs[0, 0, 0] = [0.1, 0.9]
    probs[0, 0, 1] = [0.3, 0.7]
    probs[0, 0, 2] = [0.4, 0.6]
    units = units_from_pixel_maps(PixelMaps(probs=probs.astype(np.float16)), pixel_point, 3,
                                  min_pixels=1, gap_pixels=0)
    assert len(units) == 1 and units.labels[0] == 1
    np.testing.assert_allclose(units.part_probs, [[0.8 / 3, 2.2 / 3]], atol=2e-3)
    unit, point, per_point = units.pair_probs()
    np.testing.assert_array_equal(point, [0, 1])
    # Y^d_n: the mean over the point's own pixels; Eq. 3's C^d_n is its max.
    np.testing.assert_allclose(per_point, [[0.2, 0.8], [0.4, 0.6]], atol=2e-3)
    np.testing.assert_allclose(per_point.max(axis=1), [0.8, 0.6], atol=2e-3)
    assert units.point_part_probs.dtype == np.float16


def test_pair_probs_refuses_units_without_part_probs():
    units = units_from_boxes(make_boxes([[1, 0, 3, 2]], [1]), PIXEL_POINT, N_POINTS)
    units.part_probs = None
    with pytest.raises(ValueError, match="no part probabilities"):
        units.pair_probs()

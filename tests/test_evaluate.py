"""Metrics checked against hand-computed tiny cases, plus the shared ShapeNetPart Cap data."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from shared_data import shared_data

from partseg_cli.errors import PartsegError
from partseg_cli.evaluate import (
    CSV_HEADER,
    ShapeEval,
    average_precision,
    evaluate,
    instance_ap50,
    part_ious,
)
from partseg_cli.teacher_metrics import box_regions, teacher_miou_2d

MUG = ["handle", "cup"]
CAP = ["panels", "peak"]


def _items() -> list[ShapeEval]:
    """Three Mug shapes and one Cap shape; IoUs in the comments are computed by hand."""
    a = ShapeEval("A", "Mug", MUG, np.array([0, 0, 1, 1, 1, -1]),
                  np.array([0, 0, 0, 1, -1, 1]))  # handle 2/3, cup 1/3 (point 5 ignored)
    b = ShapeEval("B", "Mug", MUG, np.ones(6, int),
                  np.array([1, 1, 1, 1, 1, 0]))  # handle 0 (pred only), cup 5/6
    c = ShapeEval("C", "Mug", MUG, np.ones(6, int), np.ones(6, int))  # handle absent, cup 1
    d = ShapeEval("D", "Cap", CAP, np.array([0, 0, 0, 1, 1, 1]),
                  np.array([0, 0, 1, 1, 1, 1]))  # panels 2/3, peak 3/4
    return [a, b, c, d]


def test_part_ious_absent_and_ignored():
    ious = part_ious(np.array([0, 0, 0, 1, -1, 1]), np.array([0, 0, 1, 1, 1, -1]), 3)
    np.testing.assert_allclose(ious[:2], [2 / 3, 1 / 3])
    assert math.isnan(ious[2])  # absent from both
    weighted = part_ious(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]), 2,
                         weights=np.array([1.0, 3.0, 2.0, 5.0]))
    np.testing.assert_allclose(weighted, [1 / 4, 7 / 10])


def test_shapenetpart_convention():
    report = evaluate(_items(), "shapenetpart")
    pts = report.domains["points"]
    np.testing.assert_allclose(pts.part_iou["Mug"], [(2 / 3 + 0 + 1) / 3, (1 / 3 + 5 / 6 + 1) / 3])
    assert pts.part_count["Mug"] == [3, 3]
    assert pts.category_miou["Mug"] == pytest.approx(23 / 36)  # shape mIoUs 1/2, 5/12, 1
    assert pts.category_miou["Cap"] == pytest.approx(17 / 24)
    assert pts.overall_miou == pytest.approx(97 / 144)
    assert pts.instance_miou == pytest.approx(63 / 96)
    assert "faces" not in report.domains and report.ap50_part_aware is None


def test_partnete_convention():
    report = evaluate(_items(), "partnete")
    pts = report.domains["points"]
    # handle only counts on A (the only gt with a handle); cup on all three.
    np.testing.assert_allclose(pts.part_iou["Mug"], [2 / 3, 13 / 18])
    assert pts.part_count["Mug"] == [1, 3]
    assert pts.category_miou["Mug"] == pytest.approx(25 / 36)
    assert pts.overall_miou == pytest.approx(101 / 144)
    assert math.isnan(pts.instance_miou)


def test_partnete_part_never_in_gt_is_undefined():
    item = ShapeEval("A", "Mug", MUG, np.ones(4, int), np.array([0, 1, 1, 1]))
    pts = evaluate([item], "partnete").domains["points"]
    assert math.isnan(pts.part_iou["Mug"][0]) and pts.part_count["Mug"] == [0, 1]
    assert pts.category_miou["Mug"] == pytest.approx(3 / 4)


def test_face_metrics_area_weighted():
    gt, pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    plain = ShapeEval("F", "Cap", CAP, np.zeros(2, int), np.zeros(2, int), gt, pred)
    weighted = ShapeEval("F", "Cap", CAP, np.zeros(2, int), np.zeros(2, int), gt, pred,
                         face_areas=np.array([1.0, 3.0, 2.0, 5.0]))
    np.testing.assert_allclose(evaluate([plain]).domains["faces"].part_iou["Cap"], [1 / 2, 2 / 3])
    faces = evaluate([weighted]).domains["faces"]
    np.testing.assert_allclose(faces.part_iou["Cap"], [1 / 4, 7 / 10])
    assert faces.overall_miou == pytest.approx((1 / 4 + 7 / 10) / 2)


def test_errors_name_the_shape():
    bad = ShapeEval("broken_7", "Mug", MUG, np.zeros(5, int), np.zeros(6, int))
    with pytest.raises(PartsegError, match="broken_7"):
        evaluate([bad])
    with pytest.raises(PartsegError, match="convention"):
        evaluate(_items(), "coco")
    out_of_range = ShapeEval("big_3", "Mug", MUG, np.zeros(2, int), np.array([0, 2]))
    with pytest.raises(PartsegError, match="big_3"):
        evaluate([out_of_range])


def _instance_item() -> ShapeEval:
    # gt: leg instances {0,1} and {2,3}, seat {4,5}; points 6, 7 are "other" (-1).
    # pred 0: leg {0}, score .9 -> IoU 1/2, not > 0.5: false positive with the top score.
    # pred 1: leg {2,3,6,7}, score .8 -> IoU 1 once the "other" points leave (else 1/2).
    # pred 2: seat {4,5}, score .7 -> IoU 1.
    return ShapeEval("I", "Chair", ["leg", "seat"],
                     gt_points=np.array([0, 0, 0, 0, 1, 1, -1, -1]),
                     pred_points=np.array([0, -1, 0, 0, 1, 1, 0, 0]),
                     gt_instances=np.array([0, 0, 1, 1, 2, 2, -1, -1]),
                     pred_instances=np.array([0, -1, 1, 1, 2, 2, 1, 1]),
                     pred_instance_labels=np.array([0, 0, 1]),
                     pred_instance_scores=np.array([0.9, 0.8, 0.7]))


def test_instance_ap50_part_aware_and_agnostic():
    aware = instance_ap50([_instance_item()], part_aware=True)
    # leg: FP then TP of 2 gt -> precision 1 at recall 0 (PartNet's start point), 1/2 up to
    # recall 1/2 (50 thresholds), 0 beyond.
    assert aware["Chair/leg"] == pytest.approx(26 / 101)
    assert aware["Chair/seat"] == pytest.approx(1.0)
    assert aware["Chair"] == pytest.approx((26 / 101 + 1) / 2)
    assert aware["mean"] == aware["Chair"]
    agnostic = instance_ap50([_instance_item()], part_aware=False)
    # F, T, T over 3 gt: precision 2/3 reaches recall 2/3 -> thresholds 0.01..0.66.
    assert agnostic["Chair"] == pytest.approx((1 + 66 * 2 / 3) / 101)
    assert set(agnostic) == {"Chair", "mean"}


def test_instance_labels_default_to_majority_and_wrong_label_misses():
    item = _instance_item()
    item.pred_instance_labels = None  # majority of pred_points: leg, leg, seat
    assert instance_ap50([item])["Chair/seat"] == pytest.approx(1.0)
    item.pred_instance_labels = np.array([0, 0, 0])  # the seat instance called a leg
    aware = instance_ap50([item])
    assert aware["Chair/seat"] == 0.0  # gt but no detection
    # an extra leg false positive after the last true positive leaves the interpolated AP
    assert aware["Chair/leg"] == pytest.approx(26 / 101)


def test_average_precision_edge_cases():
    assert math.isnan(average_precision(np.zeros(0, bool), np.zeros(0), 0))
    assert average_precision(np.zeros(0, bool), np.zeros(0), 3) == 0.0
    # sorting by score: the TP has the higher score here, so precision 1 up to recall 1.
    assert average_precision(np.array([False, True]), np.array([0.1, 0.9]), 1) == 1.0


def _report_with_everything():
    items = _items()
    items[3].gt_faces, items[3].pred_faces = np.array([0, 1]), np.array([0, 0])
    return evaluate(items + [_instance_item()], "shapenetpart")


def test_json_round_trip():
    report = _report_with_everything()
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["schema"] == "partseg.eval/1" and data["units"] == "fraction"
    assert data["categories"]["Mug"]["points"]["miou"] == pytest.approx(23 / 36)
    assert data["categories"]["Cap"]["faces"]["part_iou"] == {"panels": 0.5, "peak": 0.0}
    assert "faces" not in data["categories"]["Mug"]
    assert data["categories"]["Chair"]["ap50_part_aware"]["part_ap"]["leg"] == pytest.approx(
        26 / 101)
    assert data["categories"]["Mug"]["ap50_part_aware"] is None  # no instances: null
    assert data["overall"]["ap50_part_agnostic"] == pytest.approx(45 / 101)


def test_csv_round_trip():
    report = _report_with_everything()
    rows = list(csv.reader(io.StringIO(report.to_csv())))
    assert rows[0] == CSV_HEADER == ["category", "part", "domain", "value", "count", "shape"]
    assert {len(r) for r in rows} == {6}
    table = {(r[0], r[1], r[2]): r for r in rows[1:] if not r[5]}  # not per-shape rows
    assert float(table["Mug", "handle", "points"][3]) == pytest.approx(5 / 9)
    assert table["Mug", "(mean)", "points"][4] == "3"
    assert float(table["(overall)", "(mean)", "points"][3]) == pytest.approx(
        report.domains["points"].overall_miou)
    assert float(table["Chair", "leg", "ap50_part_aware"][3]) == pytest.approx(26 / 101)
    assert table["Chair", "leg", "ap50_part_aware"][4] == "2"  # gt instances
    assert ("Mug", "(mean)", "ap50_part_aware") not in table  # no instances given
    assert table["(overall)", "(mean)", "ap50_part_aware"][4] == "1"  # categories scored
    assert ("Cap", "peak", "faces") in table and ("Mug", "cup", "faces") not in table


def test_table_readable_for_many_categories():
    report = _report_with_everything()
    text = report.table()
    assert "63.9" in text  # Mug point mIoU 23/36
    assert "convention: shapenetpart" in text
    many = [ShapeEval(f"s{i}", f"Category{i:02d}", ["a", "b", "c", "d", "e", "f"],
                      np.arange(6), np.arange(6)) for i in range(45)]
    text = evaluate(many, "partnete").table()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert text.count("100.0") >= 45


def test_teacher_miou_2d_hand_case():
    gt = np.full((2, 4, 4), -1, np.int32)
    gt[0, :2, :2] = 0  # view 0: part 0 top-left 2x2, part 1 top-right 2x2
    gt[0, :2, 2:] = 1
    gt[1, 3, 0] = 0  # view 1: part 0 present but never predicted -> IoU 0
    masks = np.zeros((4, 4, 4), bool)
    masks[0, :3, :2] = True  # part 0, C .8: 4 px in G0, 2 outside
    masks[1, 0, 1:] = True  # part 1, C .5: 2 px in G1, 1 outside
    masks[2, 1:3, 3] = True  # part 1, C .3: 1 px in G1, 1 outside
    masks[3, 3, 3] = True  # part 1 in view 1 with confidence 0 and no gt: skipped
    view = np.array([0, 0, 0, 1])
    label = np.array([0, 1, 1, 1])
    conf = np.array([0.8, 0.5, 0.3, 0.0])
    # part 0: I = .8*4, lambda = .8*2, gamma 0 -> 2/3.
    # part 1: I = .5*2 + .3*1 = 1.3; union has 3 px in G1, 2 outside -> lambda .4*2;
    # gamma = 4 - 3 -> 1.3 / 3.1.
    expected = (2 / 3 + 1.3 / 3.1 + 0.0) / 3
    assert teacher_miou_2d(gt, masks, view, label, conf, 2) == pytest.approx(expected)
    # only the first two masks: part 1 IoU = 1 / (1 + .5 + 2) = 2/7
    got = teacher_miou_2d(gt[:1], masks[:2], view[:2], label[:2], conf[:2], 2)
    assert got == pytest.approx((2 / 3 + 2 / 7) / 2)
    assert math.isnan(teacher_miou_2d(np.full((1, 4, 4), -1), masks[:0], view[:0], label[:0],
                                      conf[:0], 2))


def test_box_regions_use_pixel_centres_and_drop_background():
    fg = np.ones((2, 4, 4), bool)
    fg[1, 0, 0] = False
    regions = box_regions(np.array([[0.0, 0.0, 2.0, 1.0], [0.4, 0.4, 1.6, 1.6]]),
                          np.array([0, 1]), fg)
    assert regions.shape == (2, 4, 4)
    expected0 = np.zeros((4, 4), bool)
    expected0[0, :2] = True  # centres (0.5, 0.5) and (1.5, 0.5)
    np.testing.assert_array_equal(regions[0], expected0)
    expected1 = np.zeros((4, 4), bool)
    expected1[:2, :2] = True
    expected1[0, 0] = False  # background in view 1
    np.testing.assert_array_equal(regions[1], expected1)


def _load_cap() -> list[tuple[str, np.ndarray]]:
    folder = shared_data("shapenetpart", "02954340")
    # global ShapeNetPart ids 6 (panels), 7 (peak) -> local 0, 1
    return [(f.stem, np.loadtxt(f, usecols=6).astype(int) - 6)
            for f in sorted(folder.glob("*.txt"))]


def test_shapenet_cap_against_direct_computation():
    shapes = _load_cap()
    perfect = evaluate([ShapeEval(n, "Cap", CAP, gt, gt) for n, gt in shapes])
    assert perfect.domains["points"].overall_miou == 1.0
    # everything called "panels": IoU panels = share of panel points, peak = 0 (gt has it)
    items = [ShapeEval(n, "Cap", CAP, gt, np.zeros_like(gt)) for n, gt in shapes]
    expected = np.mean([((gt == 0).mean() + 0.0) / 2 for _, gt in shapes])
    report = evaluate(items, "shapenetpart")
    assert report.domains["points"].category_miou["Cap"] == pytest.approx(expected)
    assert report.n_shapes["Cap"] == len(shapes) == 16


def _naive_miou_2d(gt, masks, view, label, conf, n_parts):
    """Eq. A-D written pair by pair with Python sets of pixels (slow, obviously literal)."""
    ious = []
    for v in range(gt.shape[0]):
        for r in range(n_parts):
            phi = [i for i in range(len(view)) if view[i] == v and label[i] == r]
            g = gt[v] == r
            if not phi and not g.any():
                continue
            union = np.zeros_like(g)
            inter = 0.0
            for i in phi:
                inter += conf[i] * (masks[i] & g).sum()
                union |= masks[i]
            lam = (np.mean([conf[i] for i in phi]) if phi else 0.0) * (union & ~g).sum()
            gamma = (g & ~union).sum()
            if inter + lam + gamma > 0:
                ious.append(inter / (inter + lam + gamma))
    return np.mean(ious)


def test_teacher_miou_2d_matches_literal_equations():
    rng = np.random.default_rng(3)
    gt = rng.integers(-1, 3, (3, 12, 12))
    xyxy = np.sort(rng.uniform(0, 12, (9, 2, 2)), axis=1).transpose(0, 2, 1).reshape(9, 4)
    view, label, conf = rng.integers(0, 3, 9), rng.integers(0, 3, 9), rng.uniform(0, 1, 9)
    masks = box_regions(xyxy, view, gt >= 0)
    assert teacher_miou_2d(gt, masks, view, label, conf, 3) == pytest.approx(
        _naive_miou_2d(gt, masks, view, label, conf, 3))


def _naive_partnet_ap(items: list[ShapeEval], n_parts: int) -> list[float]:
    """PartNet's eval_per_class_ap, loop for loop (one category)."""
    tps, confs, npos = [[] for _ in range(n_parts)], [[] for _ in range(n_parts)], [0] * n_parts
    for it in items:
        other = it.gt_points < 0
        gt_ids = [g for g in np.unique(it.gt_instances) if g >= 0]
        gt_masks = [(it.gt_instances == g) & ~other for g in gt_ids]
        gt_labels = [int(np.bincount(it.gt_points[m]).argmax()) for m in gt_masks]
        for lab in gt_labels:
            npos[lab] += 1
        used = [False] * len(gt_ids)
        for i in np.argsort(-it.pred_instance_scores, kind="stable"):
            lab = it.pred_instance_labels[i]
            pm = (it.pred_instances == i) & ~other
            best, best_k = 0.0, -1
            for k, gm in enumerate(gt_masks):
                if gt_labels[k] == lab and not used[k]:
                    iou = (gm & pm).sum() / (gm | pm).sum()
                    if iou > best:
                        best, best_k = iou, k
            if best > 0.5:
                used[best_k] = True
            tps[lab].append(best > 0.5)
            confs[lab].append(it.pred_instance_scores[i])
    out = []
    for p in range(n_parts):
        if npos[p] == 0:
            out.append(math.nan)
            continue
        order = np.argsort(-np.array(confs[p]), kind="stable")
        tp = np.array(tps[p], float)[order]
        ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
        rec = np.insert(ctp / npos[p], 0, 0.0)
        prec = np.insert(ctp / np.maximum(ctp + cfp, 1), 0, 1.0)
        out.append(sum(max(prec[rec >= t], default=0.0) for t in np.arange(101) / 100) / 101)
    return out


def test_instance_ap50_matches_partnet_loops():
    rng = np.random.default_rng(5)
    names = ["a", "b", "c"]
    items = []
    for s in range(6):
        n = 60
        gt_inst = rng.integers(0, 5, n)
        inst_part = rng.integers(0, 3, 5)
        gt = inst_part[gt_inst]
        gt[rng.random(n) < 0.1] = -1  # "other"
        # predictions: gt instances with a few points flipped, plus noise instances
        pred_inst = np.where(rng.random(n) < 0.8, gt_inst, rng.integers(0, 7, n))
        labels = np.concatenate([inst_part, rng.integers(0, 3, 2)])
        labels[rng.random(7) < 0.2] = rng.integers(0, 3)
        items.append(ShapeEval(f"r{s}", "Rand", names, gt, labels[pred_inst],
                               gt_instances=np.where(gt < 0, -1, gt_inst),
                               pred_instances=pred_inst, pred_instance_labels=labels,
                               pred_instance_scores=rng.uniform(0, 1, 7)))
    aware = instance_ap50(items)
    expected = _naive_partnet_ap(items, 3)
    np.testing.assert_allclose([aware[f"Rand/{n}"] for n in names], expected)
    assert 0 < aware["mean"] < 1


def _workspace(tmp_path):
    from partseg_cli.records import (
        Boxes,
        Cameras,
        KnowledgeUnits,
        Labelling,
        Mesh,
        Normalization,
        Shape,
        Views,
    )
    from partseg_cli.store import Workspace, shape_scope

    ws = Workspace.open(tmp_path / "work", create=True)
    mesh = Mesh(vertices=np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 2]], np.float32),
                faces=np.array([[0, 1, 2], [0, 1, 3]], np.int32),
                face_labels=np.array([0, 1], np.int32))  # areas 0.5 and 1
    shape = Shape("toy", np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32),
                  np.zeros((4, 3), np.float32), Normalization(np.zeros(3), 1.0),
                  part_names=["a", "b"], category="Toy", mesh=mesh,
                  point_labels=np.array([0, 1, 0, 1], np.int32))
    # prediction in its own part order ["b", "a"]: points a, a, a, b; faces b, b
    labelling = Labelling(point_labels=np.array([1, 1, 1, 0], np.int32),
                          face_labels=np.array([0, 0], np.int32), part_names=["b", "a"],
                          method="vote")
    views = Views(Cameras(np.eye(3, dtype=np.float32)[None], np.eye(4, dtype=np.float32)[None],
                          2, 2), rgb=np.zeros((1, 2, 2, 3), np.uint8),
                  depth=np.zeros((1, 2, 2), np.float32),
                  pixel_point=np.array([[[0, 1], [2, 3]]], np.int32))  # gt [[a, b], [a, b]]
    boxes = Boxes(view=np.zeros(2, np.int32), xyxy=np.array([[0, 0, 1, 2], [1, 0, 2, 2]],
                                                            np.float32),
                  part_probs=np.array([[1, 0], [1, 0]], np.float32),
                  confidence=np.array([0.5, 0.5], np.float32), features=np.zeros((2, 1),
                                                                                  np.float32))
    units = KnowledgeUnits(labels=np.zeros(2, np.int32), masks=np.zeros((2, 4), bool),
                           confidence=np.array([0.5, 0.5], np.float32),
                           view=np.zeros(2, np.int32), source_index=np.arange(2, dtype=np.int32),
                           rescored_confidence=np.array([1.0, 0.0], np.float32), source="boxes")
    scope = shape_scope("toy")
    for stage, record in (("shape", shape), ("vote", labelling), ("render", views),
                          ("detect", boxes), ("backproject", units), ("distill", labelling)):
        ws.write(scope, stage, record, key=stage)
    # the re-scores as `rescore` stores them: keyed by the units and labelling they copy
    from partseg_cli.pipeline import stage_key

    params = {"method": "distill"}
    ws.write(scope, "rescore", units, params=params,
             key=stage_key(ws, scope, "rescore", params, ["backproject", "distill"]))
    return ws


def test_run_on_a_workspace(tmp_path):
    from partseg_cli.evaluate import has_ground_truth, run

    ws = _workspace(tmp_path)
    assert has_ground_truth(ws, "toy")
    report, failed = run(ws, ["toy", "ghost"], "vote", teacher_2d=True)
    assert list(failed) == ["ghost"]
    # points (after renaming): pred a,a,a,b vs gt a,b,a,b -> a 2/3, b 1/2
    np.testing.assert_allclose(report.domains["points"].part_iou["Toy"], [2 / 3, 1 / 2])
    # faces: pred b,b vs gt a,b with areas .5, 1 -> a 0, b 1 / 1.5
    np.testing.assert_allclose(report.domains["faces"].part_iou["Toy"], [0, 2 / 3])
    # 2D: part a has two boxes (left = G_a, right = G_b); part b is never predicted.
    # before (C .5, .5): I = 1, lambda = .5 * 2 -> 1/2; after (C 1, 0): I = 2, lambda = 1.
    assert report.teacher_2d["before"]["mean"] == pytest.approx((1 / 2 + 0) / 2)
    assert report.teacher_2d["after"]["Toy"] == pytest.approx((2 / 3 + 0) / 2)
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["overall"]["teacher_miou_2d"]["after"] == pytest.approx(1 / 3)
    assert "2D after" in report.table() and "teacher_2d_before" in report.to_csv()
    # boxes vs ground-truth components (a: column 0, b: column 1): the left box is right,
    # the right one (named a over b's pixels) wrong; b's component is never found.
    # Equal confidences rank nothing (AUROC 0.5); the re-scored ones rank perfectly.
    assert data["categories"]["Toy"]["teacher_boxes"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "auroc": 0.5, "auroc_after": 1.0})
    assert data["overall"]["teacher_boxes"]["auroc_after"] == 1.0
    assert "box P" in report.table() and "AUROC after" in report.table()
    assert "Toy,(mean),teacher_box_recall,0.500000,1" in report.to_csv()
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "toy.txt").write_text("0\n1\n0\n1\n")
    report, _ = run(ws, ["toy"], pred=tmp_path / "pred")
    assert report.domains["points"].overall_miou == 1.0
    with pytest.raises(PartsegError, match="no shape could be scored"):
        run(ws, ["ghost"])
    # re-scores older than the labelling they were copied from are refused
    from partseg_cli.records import Labelling
    from partseg_cli.store import shape_scope

    ws.write(shape_scope("toy"), "distill", ws.read_record(shape_scope("toy"), "vote",
                                                           Labelling), key="newer")
    _, failed = run(ws, ["toy", "ghost"], "vote")
    assert list(failed) == ["ghost"]
    with pytest.raises(PartsegError, match="stale"):
        run(ws, ["toy"], "vote", teacher_2d=True)


def test_run_table_is_stored_and_recomputed_when_a_labelling_changes(tmp_path):
    from partseg_cli.evaluate import run, run_table
    from partseg_cli.records import Labelling
    from partseg_cli.store import collection_scope, shape_scope

    ws = _workspace(tmp_path)
    table = run_table(ws, ["toy"], "vote")
    assert table == run(ws, ["toy"], "vote", derive_instances=False)[0].table()
    assert ws.exists(collection_scope("run"), "evaluation.vote")
    ws.write(collection_scope("run"), "evaluation.vote", {"table": "stored"},
             key=ws.key(collection_scope("run"), "evaluation.vote"))
    assert run_table(ws, ["toy"], "vote") == "stored"  # same inputs: printed as stored
    right = Labelling(point_labels=np.array([0, 1, 0, 1], np.int32), part_names=["a", "b"],
                      method="vote")
    ws.write(shape_scope("toy"), "vote", right, key="another vote")
    assert "100.0" in run_table(ws, ["toy"], "vote")  # its input changed: recomputed


def test_pixel_units_reproject_their_points(tmp_path):
    from partseg_cli.evaluate import unit_regions
    from partseg_cli.records import Cameras, KnowledgeUnits, Views

    views = Views(Cameras(np.zeros((2, 3, 3), np.float32), np.zeros((2, 4, 4), np.float32), 2, 2),
                  rgb=np.zeros((2, 2, 2, 3), np.uint8), depth=np.zeros((2, 2, 2), np.float32),
                  pixel_point=np.array([[[0, 1], [-1, 2]], [[2, 2], [1, -1]]], np.int32))
    units = KnowledgeUnits(labels=np.zeros(2, np.int32),
                           masks=np.array([[True, False, True], [False, False, True]]),
                           confidence=np.ones(2, np.float32), view=np.array([0, 1], np.int32),
                           source_index=np.arange(2, dtype=np.int32), source="pixels")
    regions = unit_regions(None, "toy", units, views)
    np.testing.assert_array_equal(regions[0], [[True, False], [False, True]])
    np.testing.assert_array_equal(regions[1], [[True, True], [False, False]])


def test_match_boxes_precision_recall_and_auroc():
    from partseg_cli.teacher_metrics import auroc, match_boxes, part_components

    gt = np.full((1, 60, 80), -1, np.int32)
    gt[0, 5:35, 10:50] = 0  # body
    gt[0, 38:58, 12:18] = 1  # two legs
    gt[0, 38:58, 40:46] = 1
    gt[0, 0, 79] = 1  # a stray pixel: a component, not counted for recall
    view, part, xyxy, share = part_components(gt, 2)
    assert sorted(part.tolist()) == [0, 1, 1, 1] and np.all(view == 0)
    assert share.min() < 0.002
    boxes = np.array([[10, 5, 50, 35],  # the body, right
                      [11, 6, 49, 34],  # a tight duplicate, right too
                      [12, 38, 18, 58],  # a leg named body: wrong
                      [12, 38, 46, 58]], np.float32)  # both legs in one box: IoU < 0.5
    right, recalled, counted = match_boxes(gt, np.zeros(4, int), boxes, np.array([0, 0, 0, 1]),
                                           2)
    np.testing.assert_array_equal(right, [True, True, False, False])
    assert (recalled, counted) == (1, 3)
    assert auroc(np.array([0.9, 0.8, 0.3, 0.2]), right) == 1.0
    assert auroc(np.array([0.2, 0.8, 0.3, 0.9]), right) == 0.25  # 1 of 4 pairs ordered
    assert auroc(np.array([0.5, 0.5, 0.5, 0.5]), right) == 0.5
    assert np.isnan(auroc(np.ones(2), np.array([True, True])))


def test_training_shapes_are_reported_apart(tmp_path):
    """A labelling marked training_shape (PartSTAD's, BiPart's, a student's training
    shapes) never enters the test figures: it is scored in its own section."""
    from partseg_cli.evaluate import run
    from partseg_cli.records import Labelling, Shape
    from partseg_cli.store import shape_scope

    ws = _workspace(tmp_path)
    shape = ws.read_record(shape_scope("toy"), "shape", Shape)
    shape.shape_id = "seen"
    ws.write(shape_scope("seen"), "shape", shape, key="seen")
    perfect = Labelling(point_labels=np.array([0, 1, 0, 1], np.int32), part_names=["a", "b"],
                        method="vote", training_shape=True)
    ws.write(shape_scope("seen"), "vote", perfect, key="seen-vote")
    report, failed = run(ws, ["seen", "toy"], "vote")
    assert not failed and report.n_shapes == {"Toy": 1}
    # the test figure is toy's alone (2/3 and 1/2), not pulled up by the perfect shape
    np.testing.assert_allclose(report.domains["points"].part_iou["Toy"], [2 / 3, 1 / 2])
    assert report.training_ids == ["seen"] and report.training.n_shapes == {"Toy": 1}
    assert report.training.domains["points"].overall_miou == 1.0
    table = report.table()
    assert "training shapes (1)" in table and "not test figures" in table
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["training_shapes"]["shape_ids"] == ["seen"]
    assert data["training_shapes"]["report"]["overall"]["points"]["miou"] == 1.0
    assert data["categories"]["Toy"]["n_shapes"] == 1
    with pytest.raises(PartsegError, match="every scored shape is a training shape"):
        run(ws, ["seen"], "vote")


def test_derived_instances_split_same_part_regions():
    from partseg_cli.evaluate import derived_instances

    # Two legs (label 1) 1.0 apart, a seat (label 0) between them touching both, and
    # one unlabelled point: the legs are two instances although the seat joins them.
    line = np.linspace(0, 0.2, 21)[:, None] * np.array([[0, 1, 0]])
    legs = [line + [0, 0, 0], line + [1, 0, 0]]
    seat = np.linspace(0, 1, 101)[:, None] * np.array([[1, 0, 0]]) + [0, 0.21, 0]
    points = np.concatenate([*legs, seat, [[5, 5, 5]]])
    labels = np.array([1] * 42 + [0] * 101 + [-1])
    inst = derived_instances(points, labels)
    assert inst[-1] == -1
    assert len(set(inst[:21])) == 1 and len(set(inst[21:42])) == 1 and inst[0] != inst[21]
    assert len(set(inst[42:143])) == 1 and inst[42] not in (inst[0], inst[21])


def test_derived_instances_of_randomly_sampled_surfaces_are_whole():
    """Points sampled at random (as every mesh sampler does) leave gaps of a few median
    spacings: two plates of one part, 0.5 apart, sampled uniformly are two instances, not
    dozens of specks, and a perfect prediction of them scores AP 1."""
    from partseg_cli.evaluate import derived_instances

    rng = np.random.default_rng(0)
    plate = rng.uniform(0, 1, (4000, 3)) * [1, 1, 0]
    points = np.concatenate([plate, plate[:1000] * [0.3, 0.3, 0] + [0, 0, 0.5]])
    labels = np.zeros(len(points), np.int64)
    inst = derived_instances(points, labels)
    assert len(np.unique(inst)) == 2
    assert len(np.unique(inst[:4000])) == 1 and inst[0] != inst[-1]
    pred = np.where(inst == inst[0], 0, 1)
    item = ShapeEval("p", "Plates", ["plate"], labels, labels, gt_instances=inst,
                     pred_instances=pred, pred_instance_scores=np.ones(2))
    assert instance_ap50([item])["mean"] == pytest.approx(1.0)


def test_map50_with_derived_instances(tmp_path):
    """Data without instance labels still gets mAP50 against derived instances."""
    from partseg_cli.evaluate import run
    from partseg_cli.records import Labelling, Shape
    from partseg_cli.store import shape_scope

    ws = _workspace(tmp_path)
    shape = ws.read_record(shape_scope("toy"), "shape", Shape)
    shape.points = np.array([[0, 0, 0], [0, 0, 1], [0.01, 0, 0], [0, 0, 1.01]], np.float32)
    ws.write(shape_scope("toy"), "shape", shape, key="toy2")
    # instances a = {0, 2}, b = {1, 3}: both found, the right part, score 1
    labelling = Labelling(point_labels=np.array([0, 1, 0, 1], np.int32),
                          point_instances=np.array([0, 1, 0, 1], np.int32),
                          instance_scores=np.ones(2, np.float32), part_names=["a", "b"])
    ws.write(shape_scope("toy"), "vote", labelling, key="v2")
    report, _ = run(ws, ["toy"], "vote")
    assert report.ap50_part_aware["mean"] == pytest.approx(1.0)
    assert report.ap50_part_agnostic["mean"] == pytest.approx(1.0)
    assert report.derived_instance_shapes == 1 and "derived" in report.table()


@pytest.mark.parametrize("predicted", [True, False])
def test_a_predicted_part_the_ground_truth_lacks_scores_as_absent(predicted):
    """A LabeledDB airplane without engines, loaded alone, lists only its own parts; a
    prediction asked for "engine" too is scored, the engine as a part absent from this
    shape's ground truth: ShapeNetPart IoU 0 if predicted anywhere, else 1; PartNetE
    does not count the shape for it."""
    from partseg_cli.evaluate import shape_eval
    from partseg_cli.records import Labelling, Normalization, Shape

    zeros = np.zeros((4, 3), np.float32)
    shape = Shape("plane", zeros, zeros, zeros, Normalization(np.zeros(3), 1.0),
                  part_names=["body", "wing"], category="Airplane",
                  point_labels=np.array([0, 0, 1, 1], np.int32))
    # engine, body, wing; point 1 (body) predicted engine when ``predicted``
    pred = np.array([1, 0 if predicted else 1, 2, 2], np.int32)
    item = shape_eval(shape, Labelling(point_labels=pred, part_names=["engine", "body", "wing"],
                                       method="vote"))
    assert item.part_names == ["body", "wing", "engine"]
    body = 0.5 if predicted else 1.0
    ours = evaluate([item], "shapenetpart").domains["points"]
    assert ours.part_iou["Airplane"] == pytest.approx([body, 1.0, 0.0 if predicted else 1.0])
    partnete = evaluate([item], "partnete").domains["points"]
    assert partnete.part_iou["Airplane"][:2] == pytest.approx([body, 1.0])
    assert math.isnan(partnete.part_iou["Airplane"][2])
    assert partnete.part_count["Airplane"] == [1, 1, 0]
    assert partnete.category_miou["Airplane"] == pytest.approx((body + 1.0) / 2)

"""BiPart: support selection (BPS, Eq. 4), the head-only inner loop, training, the stage."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from test_partstad import toy_workspace

from partseg_cli.adapt import bipart
from partseg_cli.adapt.bipart import BiPartConfig, adapt_head, prepare, train
from partseg_cli.adapt.bipart import label_workspace as label
from partseg_cli.adapt.support import (
    basis_points,
    bps_features,
    cosine_similarity,
    part_perfect,
    part_point_ratio,
    select_support,
)
from partseg_cli.errors import ModelError, PartsegError
from partseg_cli.records import Boxes, KnowledgeUnits, Labelling, Normalization, Shape
from partseg_cli.saved_model import load_model, save_model
from partseg_cli.store import Workspace, shape_scope

FAST = BiPartConfig(device="cpu", n_sample=256, width=16, head_hidden=16, epochs=3,
                    batch_size=4, inner_steps=2, test_inner_steps=3, support_size=3,
                    bps_points=64)


def units_of(masks: np.ndarray, probs: np.ndarray, conf: float = 0.9) -> KnowledgeUnits:
    k = len(masks)
    return KnowledgeUnits(labels=probs.argmax(axis=1).astype(np.int32),
                          masks=np.asarray(masks, bool), confidence=np.full(k, conf, np.float32),
                          view=np.zeros(k, np.int32), source_index=np.arange(k, dtype=np.int32),
                          part_probs=np.asarray(probs, np.float32))


def blob_shape(shape_id: str, n_parts: int, seed: int, n: int = 300,
               drop_last: bool = False) -> tuple[Shape, KnowledgeUnits, np.ndarray]:
    """Blobs along x (one per part; the last one missing with ``drop_last``) and one
    unit per blob covering its left 60%; returns (shape, units, ground truth)."""
    rng = np.random.default_rng(seed)
    present = n_parts - 1 if drop_last else n_parts
    gt = np.repeat(np.arange(present), n // present + 1)[:n]
    centres = np.linspace(-0.6, 0.6, n_parts)[gt]
    pts = (rng.normal(size=(n, 3)) * 0.08 + np.c_[centres, np.zeros((n, 2))]).astype(np.float32)
    masks, probs = [], []
    for part in range(present):
        masks.append((gt == part) & (pts[:, 0] < np.quantile(pts[gt == part, 0], 0.6)))
        row = np.full(n_parts, 0.05)
        row[part] = 0.8
        probs.append(row)
    shape = Shape(shape_id, pts, np.zeros_like(pts), np.full_like(pts, 0.5),
                  Normalization(np.zeros(3), 1.0), [f"p{i}" for i in range(n_parts)],
                  category=f"cat{n_parts}")
    return shape, units_of(np.array(masks), np.array(probs)), gt


# --- support selection -------------------------------------------------------------------


def test_bps_of_a_tiny_cloud_is_the_distance_to_the_nearest_point():
    basis = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    points = np.array([[0.2, 0.0, 0.0], [1.0, 0.3, 0.0]])
    assert np.allclose(bps_features(points, basis), [0.2, 0.3, np.hypot(0.2, 0.5)])
    ball = basis_points(2000, seed=3)
    assert np.linalg.norm(ball, axis=1).max() <= 1.0
    assert np.array_equal(basis_points(5, seed=3), basis_points(5, seed=3))
    # uniform in volume: about 1/8 of the points within radius 0.5
    assert 0.09 < (np.linalg.norm(ball, axis=1) < 0.5).mean() < 0.16
    assert np.allclose(cosine_similarity(np.array([1.0, 0.0]), np.array([[2.0, 0.0], [0, 3]])),
                       [1.0, 0.0])


def test_part_ratio_of_eq4_on_a_hand_made_case():
    # 4 points, 2 parts. Unit 0 covers points 0-2 with Y = (0.9, 0.1); unit 1 covers
    # points 2-3 with Y = (0.2, 0.8). W = [[.9,.1],[.9,.1],[1.1,.9],[.2,.8]]: points 0-2
    # argmax part 0 (sum .9+.9+1.1 = 2.9), point 3 part 1 (.8).
    masks = np.array([[1, 1, 1, 0], [0, 0, 1, 1]], bool)
    ratio = part_point_ratio(units_of(masks, np.array([[0.9, 0.1], [0.2, 0.8]])), 2)
    assert np.allclose(ratio, np.array([2.9, 0.8]) / 3.7)
    ratios = np.array([[0.5, 0.5, 0.0], [0.6, 0.395, 0.005], [0.4, 0.3, 0.3], [0.2, 0.5, 0.3]])
    assert part_perfect(ratios).tolist() == [False, False, True, True]
    # nobody shows all three parts: the most parts any shows (two) is "perfect"
    assert part_perfect(ratios[:2]).tolist() == [True, True]


def test_part_perfect_selection_prefers_complete_shapes_then_fills_by_similarity():
    bps = np.array([[1.0, 0.0], [1.0, 0.05], [1.0, 0.1], [0.0, 1.0], [0.3, 1.0]])
    ratios = np.array([[.5, .5], [.99, .001], [.6, .4], [.5, .5], [.99, .005]])
    # target 0: most similar 1, 2, 4, 3; part-perfect (both parts) among them: 2, 3
    sim = select_support(0, np.arange(5), 4, "similarity", bps)
    assert sim.tolist() == [0, 1, 2, 4]
    perfect = select_support(0, np.arange(5), 4, "part-perfect", bps, ratios)
    assert perfect.tolist() == [0, 2, 3, 1]
    random = select_support(0, np.arange(5), 3, "random", rng=np.random.default_rng(0))
    assert random[0] == 0 and len(set(random.tolist())) == 3
    assert select_support(0, np.arange(5), 1, "similarity", bps).tolist() == [0]
    with pytest.raises(ValueError, match="part ratios"):
        select_support(0, np.arange(5), 4, "part-perfect", bps)


# --- the network and the inner loop --------------------------------------------------------


def prepared(config: BiPartConfig = FAST, specs=((3, False), (3, True), (3, False), (2, False))):
    encoder = bipart.build_encoder_for(config, "cpu")
    basis = basis_points(config.bps_points, 0)
    out = []
    for i, (n_parts, drop) in enumerate(specs):
        shape, units, gt = blob_shape(f"s{i}", n_parts, seed=i, drop_last=drop)
        out.append((prepare(shape, units, shape.part_names, encoder, config, "cpu", basis),
                    gt))
    return out


def test_inner_loop_updates_only_the_head():
    items = [p for p, _ in prepared()]
    net = bipart.new_network(items[0].feats.shape[1], 3, FAST, "cpu")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    feats = [net.extractor(i.feats, i.xyz, i.nbr) for i in items[:3]]
    adapted = adapt_head(net.head, feats, items[:3], 3, 0.3, "point", create_graph=True)
    assert set(adapted) == {name for name, _ in net.head.named_parameters()}
    assert any(not torch.equal(adapted[k], before[f"head.{k}"]) for k in adapted)
    for name, value in net.state_dict().items():  # the modules themselves are untouched
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in net.parameters())
    # second order: the outer loss reaches the extractor through the adapted head
    loss = bipart.shape_loss(net.head, adapted, feats[0], items[0], "point")
    loss.backward()
    assert net.extractor.project.weight.grad.abs().sum() > 0
    # at inference the extractor's output is fixed: predicting changes no weight
    bipart.predict(net, items[0], items[:3], FAST)
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_training_and_adaptation_learn_the_blobs_deterministically():
    pairs = prepared(dataclasses.replace(FAST))
    items = [p for p, _ in pairs]
    config = dataclasses.replace(FAST, epochs=6, lr=1e-3)  # a few steps must learn
    net, report = train(items, config, "cpu")
    assert net.head.n_outputs == 3 and len(report.losses) == 6
    assert report.losses[-1] < report.losses[0]
    probs = bipart.label_all(net, items, config)
    assert [p.shape[1] for p in probs] == [3, 3, 3, 2]
    accuracy = np.mean([(p.argmax(1) == gt).mean()
                        for p, (_, gt) in zip(probs, pairs, strict=True)])
    assert accuracy > 0.8
    again, _ = train(items, config, "cpu")
    for (name, a), b in zip(net.state_dict().items(), again.state_dict().values(),
                               strict=True):
        assert torch.equal(a, b), name


# --- the stage: train, save, apply ---------------------------------------------------------


def write_workspace(root: Path, specs, with_probs: bool = True) -> Workspace:
    ws = Workspace.open(root, create=True)
    for i, (n_parts, drop) in enumerate(specs):
        shape, units, gt = blob_shape(f"s{i}", n_parts, seed=i, drop_last=drop)
        shape.point_labels = gt.astype(np.int32)
        if not with_probs:
            units.part_probs = None
        scope = shape_scope(shape.shape_id)
        ws.write(scope, "shape", shape, key=f"shape-{i}-{n_parts}")
        ws.write(scope, "detect", Boxes(np.zeros(0, np.int32), np.zeros((0, 4), np.float32),
                                        np.zeros((0, n_parts), np.float32),
                                        np.zeros(0, np.float32), np.zeros((0, 1), np.float32),
                                        part_names=list(shape.part_names)), key=f"det-{i}")
        ws.write(scope, "backproject", units, key=f"units-{i}")
    return ws


SEEN = ((3, False), (3, True), (3, False), (3, False))
UNSEEN = ((2, False), (2, False), (2, False))


def test_train_save_apply_round_trip(tmp_path: Path):
    seen = write_workspace(tmp_path / "seen", SEEN)
    report = label(seen, seen.shape_ids(), FAST, model_name="m")
    assert len(report.computed) == 4
    saved = load_model(tmp_path / "seen" / "m", kind="bipart")
    assert saved.meta["head_outputs"] == 3 and saved.meta["training_shapes"] == seen.shape_ids()
    assert saved.meta["encoder"] == "pointnn" and saved.meta["train_seconds"] > 0
    labelling = seen.read_record(shape_scope("s0"), "bipart", Labelling)
    assert labelling.training_shape and labelling.point_probs.shape == (300, 3)
    # cached: same key, nothing recomputed
    assert label(seen, seen.shape_ids(), FAST, model_name="m").skipped == seen.shape_ids()

    unseen = write_workspace(tmp_path / "unseen", UNSEEN)
    applied = label(unseen, unseen.shape_ids(), FAST, apply=str(tmp_path / "seen" / "m"))
    assert len(applied.computed) == 3
    out = unseen.read_record(shape_scope("s1"), "bipart", Labelling)
    assert out.point_probs.shape == (300, 2) and not out.training_shape
    # the same model applied twice gives the same bytes
    first = out.point_probs.copy()
    label(unseen, unseen.shape_ids(), FAST, apply=str(tmp_path / "seen" / "m"), force=True)
    assert np.array_equal(first, unseen.read_record(shape_scope("s1"), "bipart",
                                                    Labelling).point_probs)
    # a changed training option invalidates the model: retrained under a new key
    key = saved.key
    label(seen, seen.shape_ids(), dataclasses.replace(FAST, inner_lr=0.05), model_name="m")
    assert load_model(tmp_path / "seen" / "m").key != key


def test_bad_inputs_are_refused(tmp_path: Path):
    seen = write_workspace(tmp_path / "seen", ((2, False), (2, False)))
    label(seen, seen.shape_ids(), FAST, model_name="m")
    more = write_workspace(tmp_path / "more", ((3, False), (3, False)))
    with pytest.raises(PartsegError, match="3 parts .* has 2 outputs"):
        label(more, more.shape_ids(), FAST, apply=str(tmp_path / "seen" / "m"))
    with pytest.raises(PartsegError, match="--head-outputs 1 is fewer than the 2 parts"):
        label(seen, seen.shape_ids(), dataclasses.replace(FAST, head_outputs=1),
              model_name="narrow")
    # a head sized for the wider unseen category (the paper's dataset-wide count) fits it
    label(seen, seen.shape_ids(), dataclasses.replace(FAST, head_outputs=3), model_name="wide")
    assert load_model(tmp_path / "seen" / "wide").meta["head_outputs"] == 3
    report = label(more, more.shape_ids(), FAST, apply=str(tmp_path / "seen" / "wide"))
    assert sorted(report.computed) == sorted(more.shape_ids())
    no_probs = write_workspace(tmp_path / "noprobs", ((2, False), (2, False)), with_probs=False)
    with pytest.raises(PartsegError, match="without the teacher's part probabilities"):
        label(no_probs, no_probs.shape_ids(), FAST, model_name="m")
    assert not (tmp_path / "noprobs" / "m").exists()
    # random selection does not need the part probabilities
    label(no_probs, no_probs.shape_ids(), dataclasses.replace(FAST, support="random"),
               model_name="m")
    other = tmp_path / "other"
    save_model(other, kind="partdistill-student", key="k", meta={}, state_dict={})
    with pytest.raises(ModelError, match="expected 'bipart'"):
        label(more, more.shape_ids(), FAST, apply=str(other))
    foreign = tmp_path / "foreign"
    meta = dict(load_model(tmp_path / "seen" / "m").meta, encoder="m2ae")
    save_model(foreign, kind="bipart", key="k", meta=meta, state_dict={})
    with pytest.raises(ModelError, match="encoder 'm2ae'"):
        label(more, more.shape_ids(), FAST, apply=str(foreign))
    empty = Workspace.open(tmp_path / "empty", create=True)
    shape, units, _ = blob_shape("s0", 2, 0)
    empty.write(shape_scope("s0"), "shape", shape, key="a")
    with pytest.raises(PartsegError, match="no knowledge units"):
        label(empty, ["s0"], FAST, model_name="m")
    units = dataclasses.replace(units, labels=units.labels[:0], masks=units.masks[:0],
                                confidence=units.confidence[:0], view=units.view[:0],
                                source_index=units.source_index[:0],
                                part_probs=units.part_probs[:0])
    empty.write(shape_scope("s0"), "backproject", units, key="b")
    empty.write(shape_scope("s0"), "detect", {"part_names": ["p0", "p1"]}, key="c")
    with pytest.raises(PartsegError, match="empty training set"):
        label(empty, ["s0"], FAST, model_name="m")


def test_cli_trains_applies_and_evaluates(tmp_path: Path, capsys, monkeypatch):
    from test_cli import partseg

    write_workspace(tmp_path / "seen", SEEN)
    write_workspace(tmp_path / "unseen", UNSEEN)
    tiny = ["--epochs", "1", "--support-size", "2", "--inner-steps", "1", "--adapt-steps", "2",
            "--device", "cpu"]
    code, _, err = partseg(capsys, monkeypatch, "adapt", str(tmp_path / "seen"), "--method",
                           "bipart", "--model-name", "bp", *tiny)
    assert code == 0, err
    assert load_model(tmp_path / "seen" / "bp", kind="bipart").meta["config"]["epochs"] == 1
    code, _, err = partseg(capsys, monkeypatch, "adapt", str(tmp_path / "unseen"), "--method",
                           "bipart", "--apply", str(tmp_path / "seen" / "bp"), "--support",
                           "similarity", *tiny)
    assert code == 0, err
    assert "parts found" in err and "points labelled" in err  # per-shape counts (notes)
    code, out, err = partseg(capsys, monkeypatch, "evaluate", str(tmp_path / "unseen"),
                             "--method", "bipart")
    assert code == 0, err
    assert "cat2" in out
    code, _, err = partseg(capsys, monkeypatch, "adapt", str(tmp_path / "unseen"), "--method",
                           "bipart", "--apply", str(tmp_path / "seen" / "missing"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing" in err


@pytest.fixture(scope="module")
def toy_work(tmp_path_factory) -> Path:
    return toy_workspace(tmp_path_factory.mktemp("bipart"))


def test_part_perfect_support_on_a_real_workspace(capsys, monkeypatch, toy_work: Path,
                                                  tmp_path: Path):
    """`run` (simulated teacher) stores units with Y^d; BiPart's default part-perfect
    selection (Eq. 4) trains and applies through the CLI; units of an older partseg
    without Y^d are refused in one line until `backproject` re-derives them."""
    import shutil

    from test_cli import assert_one_line_error, partseg

    work = tmp_path / "ws"
    shutil.copytree(toy_work, work)
    workspace = Workspace.open(work)
    for sid in workspace.shape_ids():
        units = workspace.read_record(shape_scope(sid), "backproject", KnowledgeUnits)
        assert units.part_probs.shape == (len(units), 4)
        ratio = part_point_ratio(units, 4)
        assert ratio.sum() == pytest.approx(1.0) and (ratio > 0).sum() >= 2
    tiny = ["--epochs", "1", "--support-size", "3", "--inner-steps", "1", "--adapt-steps",
            "2", "--device", "cpu", "--support", "part-perfect"]
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--method", "bipart",
                           "--model-name", "bp", *tiny)
    assert code == 0, err
    assert load_model(work / "bp", kind="bipart").meta["config"]["support"] == "part-perfect"
    labelling = workspace.read_record(shape_scope("Chair_chair2"), "bipart", Labelling)
    assert labelling.point_probs.shape == (800, 4)

    scope = shape_scope("Chair_chair2")
    artifact = workspace.read(scope, "backproject")
    old = dataclasses.replace(artifact.record(KnowledgeUnits), part_probs=None)
    workspace.write(scope, "backproject", old, key="format-1", params=artifact.params)
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--method", "bipart",
                           "--model-name", "bp2", *tiny)
    assert_one_line_error(code, err, "Chair_chair2", "re-run `partseg backproject`")
    code, _, err = partseg(capsys, monkeypatch, "backproject", work)
    assert code == 0 and "1 computed" in err, err
    assert workspace.read_record(scope, "backproject", KnowledgeUnits).part_probs is not None

"""PartSTAD: Eq. 5-6 and the relaxed IoU by hand, gradients, training, save/apply, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import EXAMPLES, assert_one_line_error, partseg
from test_vote import SUPERPOINTS, VISIBLE, toy_units

from partseg_cli.adapt import partstad
from partseg_cli.models.partstad import BoxWeightNet, encoding_dim, positional_encoding
from partseg_cli.records import Labelling
from partseg_cli.store import Workspace, shape_scope
from partseg_cli.vote import vote_scores

TINY = ["--views", "3", "--resolution", "96", "--points", "800"]


def test_lift_scores_with_unit_weights_is_voting():
    units = toy_units(extra=True)
    plan = partstad.lift_plan(units, VISIBLE, SUPERPOINTS, 2)
    scores = partstad.lift_scores(plan, torch.ones(len(units)))
    np.testing.assert_allclose(scores.numpy(), vote_scores(units, VISIBLE, SUPERPOINTS, 2),
                               rtol=1e-6)


def test_lift_scores_eq5_by_hand():
    # Units: 0 (view 0, part 0) {0, 1, 3}; 1 (view 1, part 0) {0}; 2 (view 1, part 1)
    # {3, 4, 5}; 3 (view 1, part 0) {0, 3, 4, 5}; weights 2, 3, 5, 4.
    # sp0 (points 0-2) is seen 5 times: part 0 gets 2 + 2 (view 0: points 0, 1) plus
    # max(3, 4) (view 1: point 0 in units 1 and 3) = 8 -> 1.6; part 1 gets 0.
    # sp1 (points 3-5) is seen 5 times: part 0 gets 2 (view 0: point 3) + 4 * 3 (view 1:
    # points 3, 4, 5 in unit 3) = 14 -> 2.8; part 1 gets 5 * 3 = 15 -> 3.0.
    units = toy_units(extra=True)
    plan = partstad.lift_plan(units, VISIBLE, SUPERPOINTS, 2)
    weights = torch.tensor([2.0, 3.0, 5.0, 4.0])
    scores = partstad.lift_scores(plan, weights)
    np.testing.assert_allclose(scores.numpy(), [[1.6, 2.8], [0.0, 3.0]], rtol=1e-6)
    # Eq. 6: softmax over [null, parts], null first.
    probs = partstad.part_logits(scores, torch.tensor(2.0)).softmax(dim=1).numpy()
    expected = np.exp([[2.0, 1.6, 0.0], [2.0, 2.8, 3.0]])
    np.testing.assert_allclose(probs, expected / expected.sum(axis=1, keepdims=True),
                               rtol=1e-6)


def test_lift_plan_marks_uncovered_and_unseen_superpoints():
    sp = np.array([0, 0, 0, 1, 1, 2])
    vis = VISIBLE.copy()
    vis[:, 5] = False
    units = toy_units()
    units.masks[:, 5] = False
    plan = partstad.lift_plan(units, vis, sp, 2)
    assert plan.covered.tolist() == [True, True, False]
    scores = partstad.lift_scores(plan, torch.full((len(units),), 7.0))
    assert scores[:, 2].tolist() == [0.0, 0.0]


def test_relaxed_iou_by_hand():
    # Two superpoints of 2 and 3 points; part 0 holds all of sp0, part 1 a third of sp1.
    gt = torch.tensor([[1.0, 0.0], [0.0, 1 / 3]])
    sizes = torch.tensor([2.0, 3.0])
    probs = torch.tensor([[0.5, 0.25], [0.5, 0.5]])
    # part 0: inter 2 * .5 = 1; |gt| 2; |pred| 1 + 1.5 = 2.5 -> 1 / 3.5.
    # part 1: inter 3 * 1/3 * .5 = .5; |gt| 1; |pred| .5 + 1.5 = 2 -> .5 / 2.5.
    np.testing.assert_allclose(partstad.relaxed_iou(probs, gt, sizes).numpy(),
                               [1 / 3.5, 0.5 / 2.5], rtol=1e-6)
    # Exact one-hot predictions give the hard IoU; a part absent from both scores 0.
    hard = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    gt3 = torch.cat([gt, torch.zeros(2, 1)], dim=1)
    np.testing.assert_allclose(partstad.relaxed_iou(hard, gt3, sizes).numpy(),
                               [1.0, 1 / 3, 0.0], rtol=1e-6)
    # The loss is 1 - their mean, over the non-null columns of the logits.
    logits = torch.log(torch.tensor([[1e-9, 0.5, 0.5], [1e-9, 0.25, 0.75]]))
    loss = partstad.mriou_loss(logits, gt, sizes)
    riou = partstad.relaxed_iou(torch.tensor([[0.5, 0.5], [0.25, 0.75]]), gt, sizes)
    assert float(loss) == pytest.approx(1 - float(riou.mean()), rel=1e-5)


def test_positional_encoding_layout():
    x = torch.tensor([[0.5, -1.0]])
    enc = positional_encoding(x, 3)
    assert enc.shape == (1, encoding_dim(3, 2)) == (1, 14)
    np.testing.assert_allclose(enc[0, :2], [0.5, -1.0])
    # band 1 (frequency 2): sin of both channels, then cos of both.
    np.testing.assert_allclose(enc[0, 6:10], [np.sin(1.0), np.sin(-2.0), np.cos(1.0),
                                              np.cos(-2.0)], rtol=1e-6)


def test_network_starts_at_the_offset_and_gradients_reach_the_weights():
    torch.manual_seed(0)
    net = BoxWeightNet(feature_dim=5)
    features, geometry = torch.randn(4, 5), torch.rand(4, 7)
    weights = net(features, geometry)
    np.testing.assert_allclose(weights.detach().numpy(), 10.0, atol=0.05)
    assert float(net.null().detach()) == 10.0
    units = toy_units(extra=True)
    plan = partstad.lift_plan(units, VISIBLE, SUPERPOINTS, 2)
    gt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = partstad.part_logits(partstad.lift_scores(plan, weights), net.null())
    partstad.mriou_loss(logits, gt, torch.tensor([3.0, 3.0])).backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name
    # Context normalisation: a box's weight depends on the other boxes of its shape.
    with torch.no_grad():
        net.layer_out.weight.normal_()
        alone = net(features[:2], geometry[:2])
        together = net(features, geometry)[:2]
    assert not torch.allclose(alone, together)


def _shape_inputs_toy(weights_target: str = "good") -> partstad.ShapeInputs:
    """Six points, two superpoints, a good box (feature +1) and a bad box (feature -1)."""
    units = toy_units(extra=True)
    plan = partstad.lift_plan(units, VISIBLE, SUPERPOINTS, 2)
    features = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    return partstad.ShapeInputs(
        "toy", features, torch.zeros(4, 7), torch.tensor([0.9, 0.5, 0.9, 0.5]),
        torch.arange(4), plan, ["body", "lid"], "test",
        gt_fraction=torch.tensor([[1.0, 0.0], [0.0, 1.0]]), sizes=torch.tensor([3.0, 3.0]))


def test_training_lowers_the_loss_and_is_deterministic():
    item = _shape_inputs_toy()
    config = partstad.PartstadConfig(epochs=60, lr=1e-2, batch_size=1)
    net, losses = partstad.train([item], config)
    assert losses[-1] < losses[0] - 0.2
    net2, losses2 = partstad.train([item], config)
    assert losses == losses2
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                 net2.state_dict().values(), strict=True))
    # The confidence ablation learns only the null score.
    net3, _ = partstad.train([item], partstad.PartstadConfig(epochs=5, weights="confidence"))
    assert float(net3.null_score.detach()) != 10.0
    fresh = partstad.new_network(1, partstad.PartstadConfig())
    assert torch.equal(net3.layer_in.weight, fresh.layer_in.weight)


def test_cross_entropy_loss_by_hand():
    # One superpoint of 2 points, one labelled part 0 and one unlabelled (null).
    logits = torch.log(torch.tensor([[0.25, 0.5, 0.25]]))
    loss = partstad.cross_entropy_loss(logits, torch.tensor([[0.5, 0.0]]), torch.tensor([2.0]))
    assert float(loss) == pytest.approx(-(np.log(0.25) + np.log(0.5)) / 2, rel=1e-5)


@pytest.fixture(scope="module")
def toy_work(tmp_path_factory) -> Path:
    return toy_workspace(tmp_path_factory.mktemp("partstad"))


def toy_workspace(root: Path) -> Path:
    """The toy chairs through the pipeline with the simulated teacher, tiny settings."""
    shutil.copytree(EXAMPLES, root / "data")
    with pytest.MonkeyPatch.context() as monkeypatch:
        capsys = _Capture()
        code, _, err = partseg(capsys, monkeypatch, "run", root / "data", "--work",
                               root / "ws", "--teacher", "simulated", *TINY)
    assert code == 0, err
    return root / "ws"


class _Capture:
    """A stand-in for pytest's capsys in a module-scoped fixture (output is dropped)."""

    def readouterr(self) -> tuple[str, str]:
        return "", ""


def test_cli_train_apply_evaluate_round_trip(capsys, monkeypatch, toy_work: Path,
                                             tmp_path: Path):
    work = tmp_path / "ws"
    shutil.copytree(toy_work, work)
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--method", "partstad",
                           "--train-ids", "*chair[01]", "--model-name", "chair-stad",
                           "--epochs", "4")
    assert code == 0, err
    assert "partstad train: 2 computed" in err and "partstad: 4 computed" in err
    model = json.loads((work / "chair-stad" / "model.json").read_text())
    assert model["kind"] == "partstad"
    assert model["meta"]["part_names"] == ["arm", "back", "leg", "seat"]
    assert sorted(model["meta"]["training_shapes"]) == ["Chair_chair0", "Chair_chair1"]
    assert model["meta"]["teacher"].startswith("simulated")
    workspace = Workspace.open(work)
    stored = {sid: workspace.read_record(shape_scope(sid), "partstad", Labelling)
              for sid in workspace.shape_ids()}
    assert [sid for sid, lab in stored.items() if lab.training_shape] == [
        "Chair_chair0", "Chair_chair1"]
    first = stored["Chair_chair2"]
    assert first.point_labels.shape == (800,) and first.face_labels is not None
    assert first.point_instances is not None and first.method == "partstad"

    # Rerun: the network and the labellings are cached.
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--train-ids", "*chair[01]",
                           "--model-name", "chair-stad", "--epochs", "4")
    assert code == 0 and "partstad train: 0 computed, 2 cached" in err, err
    assert "partstad: 0 computed, 4 cached" in err

    # Applying the saved network in another workspace gives the same labels; the
    # training shapes are recognised there by their content.
    other = tmp_path / "other"
    shutil.copytree(toy_work, other)
    code, _, err = partseg(capsys, monkeypatch, "adapt", other, "--apply", work / "chair-stad")
    assert code == 0, err
    again = Workspace.open(other).read_record(shape_scope("Chair_chair2"), "partstad",
                                              Labelling)
    np.testing.assert_array_equal(again.point_labels, first.point_labels)
    np.testing.assert_array_equal(again.point_instances, first.point_instances)
    assert Workspace.open(other).read_record(shape_scope("Chair_chair0"), "partstad",
                                             Labelling).training_shape

    code, out, err = partseg(capsys, monkeypatch, "evaluate", work, "--method", "partstad")
    assert code == 0, err
    assert "Chair" in out


def test_cli_bad_input_one_line_exit_2(capsys, monkeypatch, toy_work: Path, tmp_path: Path):
    work = tmp_path / "ws"
    shutil.copytree(toy_work, work)
    code, _, err = partseg(capsys, monkeypatch, "adapt", work)
    assert_one_line_error(code, err, "--train-ids", "--apply")
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--train-ids", "*chair0")
    assert_one_line_error(code, err, "--model-name")
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--train-ids", "nothing*",
                           "--model-name", "m")
    assert_one_line_error(code, err, "no shape matches")
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--method", "nope",
                           "--apply", "m")
    assert_one_line_error(code, err, "--method")
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--apply", "missing-model")
    assert_one_line_error(code, err, "missing-model", "no such model folder")
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--train-ids", "*chair0",
                           "--model-name", "m", "--loss", "hinge")
    assert_one_line_error(code, err, "--loss")

    # A corrupt network artifact.
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--train-ids", "*chair0",
                           "--model-name", "m", "--epochs", "1")
    assert code == 0, err
    (work / "m" / "weights.safetensors").write_bytes(b"not a tensor file")
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--apply", "m")
    assert_one_line_error(code, err, "weights.safetensors", "corrupt")

    # A training shape without ground truth.
    workspace = Workspace.open(work)
    scope = shape_scope("Chair_chair0")
    artifact = workspace.read(scope, "shape")
    arrays = {k: v for k, v in artifact.arrays.items() if k != "point_labels"}
    from partseg_cli.records import Shape, from_arrays

    unlabelled = from_arrays(Shape, arrays, artifact.record_attrs)
    workspace.write(scope, "shape", unlabelled, key=artifact.key, params=artifact.params)
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--train-ids", "*chair0",
                           "--model-name", "m2", "--epochs", "1")
    assert_one_line_error(code, err, "Chair_chair0", "ground-truth")
    assert not (work / "m2").exists()


def test_cli_refuses_foreign_part_lists_and_featureless_boxes(capsys, monkeypatch,
                                                              toy_work: Path, tmp_path: Path):
    from partseg_cli.records import Boxes

    work = tmp_path / "ws"
    shutil.copytree(toy_work, work)
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--train-ids", "*chair0",
                           "--model-name", "m", "--epochs", "1", "--shape-id", "*chair0")
    assert code == 0, err
    workspace = Workspace.open(work)
    scope = shape_scope("Chair_chair2")
    artifact = workspace.read(scope, "detect")
    boxes = artifact.record(Boxes)
    boxes.part_names = ["arm", "back", "leg", "top"]
    workspace.write(scope, "detect", boxes, key=artifact.key, params=artifact.params)
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--apply", "m")
    assert_one_line_error(code, err, "Chair_chair2", "differ from the network's")

    boxes.part_names = ["arm", "back", "leg", "seat"]
    boxes.features = np.zeros((len(boxes), 0), np.float32)
    workspace.write(scope, "detect", boxes, key=artifact.key, params=artifact.params)
    code, _, err = partseg(capsys, monkeypatch, "adapt", work, "--apply", "m")
    assert_one_line_error(code, err, "Chair_chair2", "no box features")


def test_cli_labels_folder_and_one_shape_file(capsys, monkeypatch, tmp_path: Path):
    """`adapt --labels DIR --shape FILE --parts ...`: the labelled folder and the file go
    through the stages, PartSTAD trains on the folder and labels the file; evaluate
    gives mIoU and mAP50 (instances derived: the OFF labels give none) with the
    training shapes apart."""
    few = tmp_path / "few" / "Chair"
    few.mkdir(parents=True)
    for i in (0, 1, 3):
        for suffix in (".off", "_labels.txt"):
            shutil.copy(EXAMPLES / "Chair" / f"chair{i}{suffix}", few)
    shutil.copy(EXAMPLES / "Chair" / "chair2.off", tmp_path / "chair.off")
    shutil.copy(EXAMPLES / "Chair" / "chair2_labels.txt", tmp_path / "chair_labels.txt")
    monkeypatch.chdir(tmp_path)
    code, _, err = partseg(capsys, monkeypatch, "adapt", "--method", "partstad", "--labels",
                           few, "--shape", "chair.off", "--parts", "arm,back,leg,seat",
                           "--teacher", "simulated", *TINY, "--epochs", "2")
    assert code == 0, err
    assert "partstad train: 3 computed" in err and "partstad: 4 computed" in err
    work = tmp_path / "runs" / "chair"
    assert (work / "partstad-Chair" / "model.json").is_file()
    code, out, err = partseg(capsys, monkeypatch, "evaluate", work, "--method", "partstad",
                             "--json", tmp_path / "eval.json")
    assert code == 0, err
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["overall"]["points"]["miou"] is not None
    assert report["overall"]["ap50_part_aware"] is not None
    assert report["overall"]["ap50_part_agnostic"] is not None
    assert sorted(report["training_shapes"]["shape_ids"]) == [
        "Chair_chair0", "Chair_chair1", "Chair_chair3"]
    code, _, err = partseg(capsys, monkeypatch, "adapt", "--shape", "chair.off")
    assert_one_line_error(code, err, "--labels")

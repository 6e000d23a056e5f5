"""The trained 2D teacher: train-teacher through the CLI, detect with it, its folder, and
the inputs it refuses."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from partseg_cli import cli, train_teacher
from partseg_cli.records import Boxes, PixelMaps, Views
from partseg_cli.store import Workspace, shape_scope
from partseg_cli.train_teacher import (
    TrainTeacherConfig,
    fit,
    fit_restarts,
    training_pairs,
    training_targets,
)
from partseg_cli.trained_teacher import TrainedTeacher, component_boxes, view_windows

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "toy_chairs"
TINY = ["--views", "4", "--resolution", "64", "--points", "1500"]
TINY_NET = ["--input-size", "32", "--width", "8", "--levels", "3", "--epochs", "40",
            "--batch-size", "4", "--restarts", "1", "--device", "cpu"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: two threads only add synchronisation (badly so on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_t_shape(folder: Path, name: str, height: float, bar: float) -> None:
    """A two-part "T" in LabeledDB layout: a vertical post and a horizontal bar on top."""
    post = trimesh.creation.box(extents=(0.25, height, 0.25))
    post.apply_translation((0, height / 2, 0))
    top = trimesh.creation.box(extents=(bar, 0.2, 0.35))
    top.apply_translation((0, height + 0.1, 0))
    mesh = trimesh.util.concatenate([post, top])
    folder.mkdir(parents=True, exist_ok=True)
    mesh.export(folder / f"{name}.off")
    n_post = len(post.faces)
    faces = np.arange(1, len(mesh.faces) + 1)
    (folder / f"{name}_labels.txt").write_text(
        f"post\n{' '.join(map(str, faces[:n_post]))}\n"
        f"bar\n{' '.join(map(str, faces[n_post:]))}\n")


@pytest.fixture(scope="module")
def t_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tshapes")
    for i, (height, bar) in enumerate([(1.2, 1.4), (1.6, 1.0), (1.0, 1.8), (1.4, 1.2)]):
        write_t_shape(root / "Tee", f"{i}", height, bar)
    return root / "Tee"


def run_cli(*args: object) -> tuple[int, str]:
    """The console entry point in-process (for module fixtures); (exit code, stderr)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["partseg", *map(str, args)])
        patch.setenv("PARTSEG_NO_PROGRESS", "1")
        try:
            cli.main()
        except SystemExit as done:
            return int(done.code or 0), ""
    return 0, ""


@pytest.fixture(scope="module")
def t_model(t_shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher trained on shapes 0-2 of the T shapes (shape 3 is held out)."""
    out = tmp_path_factory.mktemp("model") / "tee-teacher"
    code, _ = run_cli("train-teacher", t_shapes, "--out", out, "--shape-id", "Tee_[012]",
                      *TINY, *TINY_NET)
    assert code == 0
    return out


def partseg(capsys, monkeypatch, *args: object) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["partseg", *map(str, args)])
    monkeypatch.setenv("PARTSEG_NO_PROGRESS", "1")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- pure parts -------------------------------------------------------------------------


def test_component_boxes_one_box_per_region():
    probs = np.zeros((3, 20, 30), np.float32)
    probs[0] = 1.0  # background everywhere ...
    for part, (r0, r1, c0, c1) in [(1, (2, 6, 3, 9)), (1, (10, 18, 20, 28)), (2, (12, 15, 2, 6))]:
        probs[:, r0:r1, c0:c1] = 0.0
        probs[part, r0:r1, c0:c1] = 0.8
        probs[3 - part, r0:r1, c0:c1] = 0.2  # the other part takes the rest
    probs[1, 0, 0], probs[0, 0, 0] = 1.0, 0.0  # a one-pixel speckle of part 0
    xyxy, part, conf, part_probs = component_boxes(probs, min_pixels=2)
    order = np.argsort(xyxy[:, 0] * 100 + xyxy[:, 1])
    assert xyxy[order].tolist() == [[2, 12, 6, 15], [3, 2, 9, 6], [20, 10, 28, 18]]
    assert part[order].tolist() == [1, 0, 0]
    assert np.allclose(conf, 0.8)
    assert np.allclose(part_probs[order], [[0.2, 0.8], [0.8, 0.2], [0.8, 0.2]])


def test_training_targets_mark_background_parts_and_unlabelled():
    labels = np.array([[[0, 1], [-1, -1]]])
    foreground = np.array([[[True, True], [True, False]]])
    assert training_targets(labels, foreground, 2).tolist() == [[[1, 2], [-100, 0]]]


def test_view_windows_square_the_drawn_pixels_with_a_margin():
    rgb = np.full((3, 40, 60, 3), 255, np.uint8)
    rgb[0, 10:20, 30:50] = 90  # 10 rows x 20 cols
    rgb[1, 0:4, 0:2, 1] = 10  # at the corner: the window reaches past the border
    assert view_windows(rgb, crop=False).tolist() == [[0, 0, 60, 40]] * 3
    windows = view_windows(rgb, crop=True)
    assert windows[0].tolist() == [29, 4, 22, 22]  # 20 * 1.1 wide, centred on the drawing
    assert windows[1].tolist() == [-2, -1, 5, 5]
    assert windows[2].tolist() == [0, 0, 60, 40]  # nothing drawn: the whole view


def test_training_targets_follow_the_window():
    labels = np.full((1, 8, 8), -1)
    labels[0, 4:8, 4:8] = 1
    foreground = labels >= 0
    # the bottom-right quarter and as much again past the border, at 2 x 2 network pixels
    targets = training_targets(labels, foreground, 2, np.array([[4, 4, 8, 8]]))
    assert targets.tolist() == [[[2, 0], [0, 0]]]


def small_object(offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A 64 x 64 white view with a 10 x 10 object: dark left half part 0, light right half
    part 1 (a quarter of a pixel of the 16-px network input when the whole view is seen)."""
    rgb = np.full((1, 64, 64, 3), 255, np.uint8)
    labels = np.full((1, 64, 64), -1)
    r, c = offset
    rgb[0, r:r + 10, c:c + 5], labels[0, r:r + 10, c:c + 5] = 60, 0
    rgb[0, r:r + 10, c + 5:c + 10], labels[0, r:r + 10, c + 5:c + 10] = 180, 1
    return rgb, labels


def test_a_cropping_teacher_segments_a_small_object_anywhere_in_the_view():
    config = TrainTeacherConfig(input_size=16, width=8, levels=2, epochs=60, batch_size=4,
                                lr=1e-2, crop=True)
    pairs = [training_pairs(*small_object(o), small_object(o)[1] >= 0, config)
             for o in [(5, 5), (40, 10), (20, 44), (50, 50)]]
    net, _ = fit(torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]), 2,
                 config)
    teacher = TrainedTeacher(net, ["dark", "light"], 16, torch.device("cpu"), "test", "",
                             set(), crop=True)
    rgb, labels = small_object((30, 25))  # a place it was not trained at
    probs = teacher.segment(rgb, ["dark", "light"]).probs[0].astype(np.float32)
    drawn = labels[0] >= 0
    assert (probs.argmax(-1)[drawn] == labels[0][drawn]).mean() > 0.9
    near = np.zeros_like(drawn)
    near[28:42, 23:37] = True  # the object and two pixels around it (blurred edges)
    assert probs[~near].max() < 0.5  # elsewhere background, past the window exactly so
    assert probs[:, :20].max() == 0.0
    boxes = teacher.detect(rgb, ["dark", "light"])
    best = {int(p): boxes.xyxy[boxes.labels == p][0].tolist() for p in (0, 1)}
    assert np.allclose(best[0], [25, 30, 30, 40], atol=1.5), best
    assert np.allclose(best[1], [30, 30, 35, 40], atol=1.5), best


def test_training_is_deterministic_and_learns_a_split():
    # left half part 0, right half part 1, a white border: learnable from the pixels
    images = torch.ones(4, 3, 16, 16)
    images[:, :, 4:12, 4:8] = 0.3
    images[:, :, 4:12, 8:12] = 0.7
    targets = torch.zeros(4, 16, 16, dtype=torch.int64)
    targets[:, 4:12, 4:8] = 1
    targets[:, 4:12, 8:12] = 2
    config = TrainTeacherConfig(input_size=16, width=8, levels=2, epochs=80, batch_size=4,
                                lr=1e-2)
    net_a, losses = fit(images, targets, 2, config)
    net_b, _ = fit(images, targets, 2, config)
    for name, value in net_a.state_dict().items():
        assert torch.equal(value, net_b.state_dict()[name]), name
    assert losses[-1] < losses[0] / 2
    with torch.no_grad():
        predicted = net_a(images).argmax(dim=1)
    assert (predicted == targets).float().mean() > 0.9


def test_restarts_keep_the_run_with_the_lowest_final_loss():
    images = torch.ones(4, 3, 16, 16)
    images[:, :, 4:12, 4:8] = 0.3
    images[:, :, 4:12, 8:12] = 0.7
    targets = torch.zeros(4, 16, 16, dtype=torch.int64)
    targets[:, 4:12, 4:8] = 1
    targets[:, 4:12, 8:12] = 2
    config = TrainTeacherConfig(input_size=16, width=4, levels=2, epochs=6, batch_size=2,
                                lr=1e-2, seed=5, restarts=4)
    net, losses, runs = fit_restarts(images, targets, 2, config)
    assert [r["seed"] for r in runs] == [5, 6, 7, 8]
    finals = [r["final_loss"] for r in runs]
    assert len(set(finals)) == 4  # the seeds differ, so the choice matters
    best = runs[int(np.argmin(finals))]
    assert losses[-1] == min(finals)
    alone, _ = fit(images, targets, 2, TrainTeacherConfig(
        input_size=16, width=4, levels=2, epochs=6, batch_size=2, lr=1e-2, seed=best["seed"]))
    for name, value in net.state_dict().items():
        assert torch.equal(value, alone.state_dict()[name]), name


# --- through the CLI --------------------------------------------------------------------


def test_train_detect_evaluate_on_a_held_out_shape(capsys, monkeypatch, t_shapes: Path,
                                                   t_model: Path, tmp_path: Path):
    meta = json.loads((t_model / "model.json").read_text())
    assert meta["kind"] == "teacher2d"
    assert meta["meta"]["part_names"] == ["bar", "post"]
    assert [s["id"] for s in meta["meta"]["training_shapes"]] == ["Tee_0", "Tee_1", "Tee_2"]
    assert (t_model.parent / "tee-teacher.work" / "partseg.json").is_file()

    # unchanged request: not retrained
    code, _, err = partseg(capsys, monkeypatch, "train-teacher", t_shapes, "--out", t_model,
                           "--shape-id", "Tee_[012]", *TINY, *TINY_NET)
    assert code == 0 and "train-teacher: 0 computed, 3 cached" in err, err

    work = tmp_path / "ws"
    with pytest.warns(UserWarning, match="3 shape.s. were training shapes"):  # named
        code, out, err = partseg(capsys, monkeypatch, "run", t_shapes, "--work", work,
                                 "--teacher", "trained", "--model", t_model, *TINY)
    assert code == 0, err
    workspace = Workspace.open(work)
    boxes = workspace.read_record(shape_scope("Tee_3"), "detect", Boxes)
    assert len(boxes) > 0 and not boxes.training_shape
    assert boxes.features.shape == (len(boxes), 88) and np.isfinite(boxes.features).all()
    assert ((boxes.confidence > 0) & (boxes.confidence <= 1)).all()
    assert workspace.read_record(shape_scope("Tee_0"), "detect", Boxes).training_shape

    # evaluate scores only the held-out shape, with a warning for the others
    with pytest.warns(UserWarning, match="not scoring 3 shape.s. the teacher was trained on"):
        code, out, err = partseg(capsys, monkeypatch, "evaluate", work, "--teacher-2d",
                                 "--json", tmp_path / "m.json")
    assert code == 0, err
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["categories"]["Tee"]["n_shapes"] == 1
    assert report["categories"]["Tee"]["teacher_miou_2d"]["before"] > 0

    # the pixel teacher learned the split: its 2D IoU beats a constant guess (<= 0.5)
    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "trained-pixels",
                           "--model", t_model, "--shape-id", "Tee_3")
    assert code == 0, err
    maps = workspace.read_record(shape_scope("Tee_3"), "detect", PixelMaps)
    views = workspace.read_record(shape_scope("Tee_3"), "render", Views)
    from partseg_cli.evaluate import gt_label_images
    from partseg_cli.records import Shape

    gt = gt_label_images(workspace.read_record(shape_scope("Tee_3"), "shape", Shape), views)
    pred = maps.probs.astype(np.float32).argmax(axis=-1)
    fg = gt >= 0
    ious = [np.sum((pred == p) & (gt == p) & fg) / np.sum(((pred == p) | (gt == p)) & fg)
            for p in range(2)]
    assert np.mean(ious) > 0.6, ious


def test_restarts_are_part_of_the_key_and_recorded(capsys, monkeypatch, t_shapes: Path,
                                                   tmp_path: Path):
    out = tmp_path / "restarted"
    args = ["train-teacher", t_shapes, "--out", out, "--shape-id", "Tee_[01]", *TINY,
            "--input-size", "32", "--epochs", "3", "--batch-size", "4", "--device", "cpu"]
    code, _, err = partseg(capsys, monkeypatch, *args, "--restarts", "1")
    assert code == 0 and "train-teacher: 2 computed" in err, err
    key = json.loads((out / "model.json").read_text())["key"]
    code, _, err = partseg(capsys, monkeypatch, *args, "--restarts", "2", "--seed", "4")
    assert code == 0 and "train-teacher: 2 computed" in err, err  # another key: retrained
    meta = json.loads((out / "model.json").read_text())
    assert meta["key"] != key
    runs = meta["meta"]["restarts"]
    assert [r["seed"] for r in runs] == [4, 5]
    assert meta["meta"]["final_loss"] == min(r["final_loss"] for r in runs)
    assert meta["meta"]["calibration"] is None and meta["meta"]["epochs_trained"] == 3


def test_calibration_stops_earlier_for_a_lower_target_on_training_shapes_only(
        t_shapes: Path, tmp_path: Path, monkeypatch):
    work = tmp_path / "ws"
    code, _ = run_cli("render", t_shapes, "--work", work, *TINY)  # all four shapes
    assert code == 0
    workspace = Workspace.open(work)
    read = []
    for name in ("read_record", "info", "key"):
        original = getattr(Workspace, name)

        def spy(self, scope, *rest, original=original, **kw):
            read.append(scope)
            return original(self, scope, *rest, **kw)

        monkeypatch.setattr(Workspace, name, spy)
    training = ["Tee_0", "Tee_1", "Tee_2"]
    trained = {}
    for target in (0.05, 1.0):
        config = TrainTeacherConfig(input_size=32, width=8, levels=3, epochs=30, batch_size=4,
                                    restarts=1, target_miou=target, device="cpu")
        out = tmp_path / f"target-{target}"
        train_teacher.run(workspace, training, config, out)
        trained[target] = json.loads((out / "model.json").read_text())["meta"]
    assert {str(s) for s in read} <= {str(shape_scope(sid)) for sid in training}
    low, high = trained[0.05], trained[1.0]
    assert low["calibration"]["target_miou"] == 0.05
    assert [f["held_out"] for f in low["calibration"]["folds"]] == [[0, 2], [1]]
    assert all(f["reached"] for f in low["calibration"]["folds"])
    assert low["epochs_trained"] == low["calibration"]["epochs"] < 30
    assert not any(f["reached"] for f in high["calibration"]["folds"])
    assert high["epochs_trained"] == 30  # never reached: the whole schedule


def test_saved_teacher_predicts_the_same_after_loading(t_model: Path, tmp_path: Path):
    teacher = TrainedTeacher.load(t_model, torch.device("cpu"))
    copy = tmp_path / "copy"
    shutil.copytree(t_model, copy)
    again = TrainedTeacher.load(copy, torch.device("cpu"))
    images = np.random.default_rng(0).integers(0, 256, (2, 48, 40, 3), dtype=np.uint8)
    images[:, 10:40, 12:30] = 120
    a = teacher.detect(images, ["post", "bar"])
    b = again.detect(images, ["post", "bar"])
    assert np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.features, b.features)
    assert np.array_equal(a.confidence, b.confidence)
    maps = teacher.segment(images, ["bar", "post"])
    assert maps.probs.shape == (2, 48, 40, 2)
    assert np.array_equal(maps.probs, again.segment(images, ["bar", "post"]).probs)
    # part order follows the request
    swapped = teacher.segment(images, ["post", "bar"]).probs
    assert np.array_equal(swapped[..., ::-1], maps.probs)


# --- bad input --------------------------------------------------------------------------


def test_train_teacher_refuses_bad_input(capsys, monkeypatch, t_shapes: Path, tmp_path: Path):
    unlabelled = tmp_path / "plain"
    unlabelled.mkdir()
    trimesh.creation.box().export(unlabelled / "cube.off")
    code, _, err = partseg(capsys, monkeypatch, "train-teacher", unlabelled, "--out",
                           tmp_path / "m1", *TINY, *TINY_NET)
    assert_one_line_error(code, err, "cube", "no ground-truth part labels")

    code, _, err = partseg(capsys, monkeypatch, "train-teacher", t_shapes, EXAMPLES, "--out",
                           tmp_path / "m2", *TINY, *TINY_NET)
    assert_one_line_error(code, err, "differ", "one teacher per category")

    code, _, err = partseg(capsys, monkeypatch, "train-teacher", t_shapes, "--out",
                           tmp_path / "m3", "--shape-id", "Chair_*", *TINY, *TINY_NET)
    assert_one_line_error(code, err, "no shape", "matches --shape-id Chair_*")

    data = tmp_path / "mine"
    data.mkdir()
    (data / "notes.txt").write_text("keep me")
    code, _, err = partseg(capsys, monkeypatch, "train-teacher", t_shapes, "--out", data,
                           *TINY, *TINY_NET)
    assert_one_line_error(code, err, str(data), "not a partseg model folder")
    assert (data / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in data.iterdir()) == ["notes.txt"]
    assert not (tmp_path / "mine.work").exists()  # refused before any work

    a_file = tmp_path / "notes.md"
    a_file.write_text("keep me too")
    code, _, err = partseg(capsys, monkeypatch, "train-teacher", t_shapes, "--out", a_file,
                           *TINY, *TINY_NET)
    assert_one_line_error(code, err, str(a_file), "not a partseg model folder")
    assert a_file.read_text() == "keep me too"

    code, _, err = partseg(capsys, monkeypatch, "train-teacher", t_shapes, "--out",
                           tmp_path / "m4", "--input-size", "30", *TINY)
    assert_one_line_error(code, err, "--input-size 30")
    for name in ("m1", "m2", "m3", "m4"):
        assert not (tmp_path / name).exists()


def test_trained_teacher_refuses_bad_models(capsys, monkeypatch, t_model: Path,
                                            tmp_path: Path):
    work = tmp_path / "ws"
    code, _, err = partseg(capsys, monkeypatch, "render", EXAMPLES, "--work", work, *TINY)
    assert code == 0, err

    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "trained")
    assert_one_line_error(code, err, "--teacher trained needs --model")
    code, _, err = partseg(capsys, monkeypatch, "run", EXAMPLES, "--work", work,
                           "--teacher", "trained-pixels", *TINY)
    assert_one_line_error(code, err, "--teacher trained-pixels needs --model")

    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "trained",
                           "--model", tmp_path / "nowhere")
    assert_one_line_error(code, err, "nowhere", "no such model folder")

    corrupt = tmp_path / "corrupt"
    shutil.copytree(t_model, corrupt)
    (corrupt / "weights.safetensors").write_bytes(b"not weights")
    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "trained",
                           "--model", corrupt)
    assert_one_line_error(code, err, "corrupt or unreadable")

    broken = tmp_path / "broken"
    shutil.copytree(t_model, broken)
    (broken / "model.json").write_text("{not json")
    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "trained-pixels",
                           "--model", broken)
    assert_one_line_error(code, err, "model.json", "unreadable")

    # a teacher of T shapes asked about chairs, by detect and by run
    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "trained",
                           "--model", t_model)
    assert_one_line_error(code, err, "trained on parts bar, post", "arm")
    code, _, err = partseg(capsys, monkeypatch, "run", EXAMPLES, "--work", work,
                           "--teacher", "trained", "--model", t_model, *TINY)
    assert_one_line_error(code, err, "trained on parts bar, post", "arm")
    assert not Workspace.open(work).exists(shape_scope("Chair_chair0"), "detect")

"""The `partseg` command as a user runs it: end to end, caching, and bad input."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from shared_data import shared_data

from partseg_cli import cli
from partseg_cli.records import Boxes, Labelling, Masks
from partseg_cli.store import Workspace, shape_scope

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "toy_chairs"
SMALL = ["--views", "4", "--resolution", "160", "--points", "2000"]


def partseg(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
            *args: str) -> tuple[int, str, str]:
    """Run the console entry point in-process; returns (exit code, stdout, stderr)."""
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


@pytest.fixture
def chairs(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(EXAMPLES, folder)
    return folder


def test_help_documents_every_command(capsys, monkeypatch) -> None:
    code, out, _ = partseg(capsys, monkeypatch, "--help")
    assert code == 0
    for command in ("render", "detect", "sam-refine", "superpoints", "backproject", "vote",
                    "evaluate", "run", "export", "inspect"):
        assert command in out
    code, out, _ = partseg(capsys, monkeypatch, "render", "--help")
    assert code == 0 and "--resolution" in out and "--png" in out


def test_run_end_to_end_then_cached(capsys, monkeypatch, chairs: Path, tmp_path: Path) -> None:
    work = tmp_path / "ws"
    code, out, err = partseg(capsys, monkeypatch, "run", chairs, "--work", work,
                             "--teacher", "simulated", *SMALL)
    assert code == 0, err
    assert "Chair" in out and "mIoU" in out
    assert "vote: 4 computed" in err
    workspace = Workspace.open(work)
    assert len(workspace.shape_ids()) == 4
    labelling = workspace.read_record(shape_scope("Chair_chair0"), "vote", Labelling)
    assert labelling.point_labels.shape == (2000,)
    assert labelling.face_labels is not None
    assert set(np.unique(labelling.point_labels)) <= {-1, 0, 1, 2, 3}

    code, _, err = partseg(capsys, monkeypatch, "run", chairs, "--work", work,
                           "--teacher", "simulated", *SMALL)
    assert code == 0 and "vote: 0 computed, 4 cached" in err and "render: 0 computed" in err

    # A changed voting threshold redoes only the vote.
    code, _, err = partseg(capsys, monkeypatch, "vote", work, "--threshold", "0.6")
    assert code == 0 and "vote: 4 computed" in err

    json_path = tmp_path / "m.json"
    code, out, err = partseg(capsys, monkeypatch, "evaluate", work, "--json", json_path,
                             "--csv", tmp_path / "m.csv", "--teacher-2d")
    assert code == 0, err
    assert json_path.is_file() and (tmp_path / "m.csv").read_text().startswith("category")

    code, _, err = partseg(capsys, monkeypatch, "export", work, "--out", tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / "Chair_chair1" / "mesh.glb").is_file()

    code, out, _ = partseg(capsys, monkeypatch, "inspect", work)
    assert code == 0 and "Chair_chair2" in out and "vote" in out


def test_sam_refine_and_pixel_teacher_paths(capsys, monkeypatch, chairs: Path,
                                            tmp_path: Path) -> None:
    work = tmp_path / "ws"
    code, _, err = partseg(capsys, monkeypatch, "run", chairs / "Chair" / "chair0.off",
                           "--work", work, "--teacher", "simulated", "--sam", "simulated",
                           "--parts", "back,seat,leg,arm", *SMALL)
    assert code == 0, err
    workspace = Workspace.open(work)
    scope = shape_scope(workspace.shape_ids()[0])
    boxes = workspace.read_record(scope, "detect", Boxes)
    masks = workspace.read_record(scope, "sam-refine", Masks)
    assert masks.masks.shape[0] == len(boxes)
    assert workspace.info(scope, "backproject")["params"]["source"] == "masks"

    assert masks.refiner.startswith("sam-oracle")
    code, _, err = partseg(capsys, monkeypatch, "sam-refine", work, "--model", "grabcut")
    assert code == 0, err
    masks = workspace.read_record(scope, "sam-refine", Masks)
    assert masks.masks.shape[0] == len(boxes) and masks.refiner.startswith("grabcut")

    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher",
                           "simulated-pixels")
    assert code == 0, err
    code, _, err = partseg(capsys, monkeypatch, "backproject", work)
    assert code == 0, err
    assert workspace.info(scope, "backproject")["params"]["source"] == "pixels"
    code, _, err = partseg(capsys, monkeypatch, "vote", work)
    assert code == 0, err


def test_real_teacher_path_with_tiny_model(capsys, monkeypatch, chairs: Path, tmp_path: Path,
                                           tiny_models) -> None:
    work = tmp_path / "ws"
    code, _, err = partseg(capsys, monkeypatch, "render", chairs / "Chair" / "chair1.off",
                           "--work", work, "--views", "2", "--resolution", "64",
                           "--points", "500")
    assert code == 0, err
    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "owlv2",
                           "--model", tiny_models["owlv2"], "--parts", "back,seat",
                           "--threshold", "0.0", "--device", "cpu")
    assert code == 0, err
    workspace = Workspace.open(work)
    boxes = workspace.read_record(shape_scope(workspace.shape_ids()[0]), "detect", Boxes)
    assert boxes.part_names == ["back", "seat"] and boxes.features.ndim == 2

    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "owlv2",
                           "--model", tmp_path / "no-such-model")
    assert_one_line_error(code, err, "no-such-model")
    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "glip")
    assert_one_line_error(code, err, "unknown teacher", "owlv2")


@pytest.mark.parametrize("teacher", ["owlvit", "grounding-dino", "clipseg"])
def test_every_real_teacher_runs_through_the_pipeline(capsys, monkeypatch, chairs: Path,
                                                      tmp_path: Path, tiny_models,
                                                      teacher: str) -> None:
    work = tmp_path / "ws"
    code, _, err = partseg(capsys, monkeypatch, "run", chairs / "Chair" / "chair2.off",
                           "--work", work, "--teacher", teacher, "--model",
                           tiny_models[teacher], "--parts", "back,seat", "--views", "2",
                           "--resolution", "64", "--points", "500", "--device", "cpu")
    assert code == 0, err
    assert "vote: 1 computed" in err


def test_sam_refine_with_tiny_transformers_sam(capsys, monkeypatch, chairs: Path,
                                               tmp_path: Path, tiny_models) -> None:
    work = tmp_path / "ws"
    code, _, err = partseg(capsys, monkeypatch, "run", chairs / "Chair" / "chair2.off",
                           "--work", work, "--teacher", "simulated", "--parts",
                           "back,seat,leg,arm", "--views", "2", "--resolution", "64",
                           "--points", "500")
    assert code == 0, err
    code, _, err = partseg(capsys, monkeypatch, "sam-refine", work, "--model",
                           tiny_models["sam"], "--device", "cpu")
    assert code == 0, err
    workspace = Workspace.open(work)
    scope = shape_scope(workspace.shape_ids()[0])
    masks = workspace.read_record(scope, "sam-refine", Masks)
    assert masks.masks.shape[1:] == (64, 64)
    assert masks.masks.shape[0] == len(workspace.read_record(scope, "detect", Boxes))
    code, _, err = partseg(capsys, monkeypatch, "sam-refine", work, "--checkpoint",
                           tmp_path / "sam_vit_b.pth", "--model-type", "vit_b")
    assert_one_line_error(code, err)


def test_simulated_teacher_refuses_unlabelled_shapes(capsys, monkeypatch,
                                                     tmp_path: Path) -> None:
    mesh = shared_data("meshes", "teapot.stl")
    work = tmp_path / "ws"
    assert partseg(capsys, monkeypatch, "render", mesh, "--work", work, *SMALL)[0] == 0
    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "simulated",
                           "--parts", "lid,spout")
    assert code == 2 and "ground-truth" in err and "Traceback" not in err


def test_bad_inputs_give_one_line_and_exit_2(capsys, monkeypatch, tmp_path: Path) -> None:
    work = tmp_path / "ws"
    code, _, err = partseg(capsys, monkeypatch, "render", tmp_path / "missing.obj",
                           "--work", work)
    assert_one_line_error(code, err, "missing.obj")
    (tmp_path / "shape.xyz3").write_text("1 2 3\n")
    code, _, err = partseg(capsys, monkeypatch, "render", tmp_path / "shape.xyz3",
                           "--work", work)
    assert_one_line_error(code, err, "shape.xyz3")
    nan = tmp_path / "nan.xyz"
    nan.write_text("0 0 0\nnan 1 1\n1 0 0\n")
    code, _, err = partseg(capsys, monkeypatch, "render", nan, "--work", work)
    assert code != 0 and "nan.xyz" in err and "Traceback" not in err
    code, _, err = partseg(capsys, monkeypatch, "detect", tmp_path / "nowhere")
    assert_one_line_error(code, err, "nowhere")
    code, _, err = partseg(capsys, monkeypatch, "render", nan, "--work", work, "--views", "3",
                           "--elevations", "10,20")
    assert_one_line_error(code, err, "--elevations")


def test_folder_with_bad_shapes_renders_the_good_ones(capsys, monkeypatch, chairs: Path,
                                                      tmp_path: Path) -> None:
    folder = chairs / "Chair"
    (folder / "broken.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n")  # truncated
    (folder / "broken_labels.txt").write_text("seat\n1\n")
    labels = (folder / "chair2_labels.txt").read_text().split("\n")
    (folder / "chair2_labels.txt").write_text("\n".join(labels[:-3]) + "\n")  # faces missing
    work = tmp_path / "ws"
    code, _, err = partseg(capsys, monkeypatch, "render", chairs, "--work", work, *SMALL)
    assert code == 1
    assert "2 shape(s) failed" in err and "broken" in err and "chair2_labels.txt" in err
    assert "Traceback" not in err
    assert Workspace.open(work).shape_ids() == ["Chair_chair0", "Chair_chair1", "Chair_chair3"]


def test_bad_input_leaves_the_store_untouched(capsys, monkeypatch, chairs: Path,
                                              tmp_path: Path) -> None:
    work = tmp_path / "ws"
    good = chairs / "Chair" / "chair3.off"
    assert partseg(capsys, monkeypatch, "render", good, "--work", work, *SMALL)[0] == 0
    shape_id = Workspace.open(work).shape_ids()[0]
    before = Workspace.open(work).key(shape_scope(shape_id), "render")
    # The same shape id, now with a corrupt file: it fails and the stored output stays.
    shutil.copy(good, tmp_path / "keep.off")
    good.write_text("OFF\n1 1 0\n0 0 nan\n3 0 0 0\n")
    code, _, err = partseg(capsys, monkeypatch, "render", good, "--work", work, *SMALL)
    assert code != 0 and "chair3.off" in err and "Traceback" not in err
    workspace = Workspace.open(work)
    assert workspace.key(shape_scope(shape_id), "render") == before
    assert workspace.read(shape_scope(shape_id), "shape").arrays["points"].shape == (2000, 3)


def test_incompatible_workspace_is_refused(capsys, monkeypatch, chairs: Path,
                                           tmp_path: Path) -> None:
    work = tmp_path / "ws"
    work.mkdir()
    (work / "partseg.json").write_text('{"format": 0, "backend": "zarr"}')
    code, _, err = partseg(capsys, monkeypatch, "render", chairs, "--work", work)
    assert_one_line_error(code, err, "incompatible")
    code, _, err = partseg(capsys, monkeypatch, "vote", work)
    assert_one_line_error(code, err, "incompatible")


def test_hdf5_backend_runs_the_same_pipeline(capsys, monkeypatch, chairs: Path,
                                             tmp_path: Path) -> None:
    work = tmp_path / "ws"
    code, out, err = partseg(capsys, monkeypatch, "run", chairs / "Chair" / "chair0.off",
                             "--work", work, "--teacher", "simulated", "--backend", "hdf5",
                             "--parts", "back,seat,leg,arm", *SMALL)
    assert code == 0, err
    shape_id = Workspace.open(work).shape_ids()[0]
    assert (work / "store.h5" / "shapes" / shape_id / "vote.h5").is_file()


def test_distill_modes_rescore_and_few_shot(capsys, monkeypatch, chairs: Path,
                                            tmp_path: Path) -> None:
    work = tmp_path / "ws"
    code, out, err = partseg(capsys, monkeypatch, "run", chairs, "--work", work,
                             "--teacher", "simulated", "--distill", "tta", *SMALL)
    assert code == 0, err
    assert "[distill]" in out and "distill: 4 computed" in err
    workspace = Workspace.open(work)
    labelling = workspace.read_record(shape_scope("Chair_chair0"), "distill", Labelling)
    assert (labelling.point_labels >= 0).all()  # the student labels every point
    assert labelling.point_probs.shape == (2000, 4) and labelling.face_labels is not None

    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--mode", "pre",
                           "--output", "pre", "--epochs", "5")
    assert code == 0 and "distill.pre: 4 computed" in err, err
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--mode", "pre",
                           "--output", "pre", "--epochs", "5")
    assert code == 0 and "distill.pre: 0 computed, 4 cached" in err, err

    code, _, err = partseg(capsys, monkeypatch, "rescore", work, "--method", "pre")
    assert code == 0 and "rescore: 4 computed" in err, err
    from partseg_cli.records import KnowledgeUnits

    units = workspace.read_record(shape_scope("Chair_chair1"), "rescore", KnowledgeUnits)
    stored = workspace.read(shape_scope("Chair_chair1"), "distill.pre").arrays
    # a copy of what distill computed: no second student
    np.testing.assert_array_equal(units.rescored_confidence, stored["rescored_confidence"])
    assert units.rescored_confidence.shape == units.confidence.shape
    code, out, err = partseg(capsys, monkeypatch, "evaluate", work, "--method",
                             "distill.pre", "--teacher-2d")
    assert code == 0 and "2D after" in out, err
    # a retrained labelling makes the copied re-scores stale: evaluate refuses them
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--mode", "pre",
                           "--output", "pre", "--epochs", "4")
    code, out, err = partseg(capsys, monkeypatch, "evaluate", work, "--method",
                             "distill.pre", "--teacher-2d")
    assert code != 0 and "stale" in err and "rerun `partseg rescore`" in err, err
    code, _, err = partseg(capsys, monkeypatch, "rescore", work, "--method", "pre")
    assert code == 0 and "rescore: 4 computed" in err, err

    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--mode", "pre",
                           "--output", "few", "--epochs", "5", "--labels", chairs / "Chair")
    assert code == 0 and "distill.few: 4 computed" in err, err
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--labels", chairs)
    assert_one_line_error(code, err, "--mode pre")
    # every deviation from the paper has its paper value on the command line
    paper = ["--normalise", "eq3", "--tau-mode", "absolute", "--bd-latest", "none",
             "--lr-schedule", "constant", "--bd-weighting", "replace",
             "--steps-per-epoch", "1"]
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--mode", "pre",
                           "--output", "paper", "--epochs", "3", *paper)
    assert code == 0, err
    params = workspace.info(shape_scope("Chair_chair0"), "distill.paper")["params"]
    student = json.loads((work / "students" / "distill.paper-Chair" / "model.json"
                          ).read_text())["meta"]["config"]
    assert params["alignment"] == "transductive" and student["normalise"] == "eq3"
    assert (student["tau_mode"], student["bd_latest"], student["lr_schedule"]) == (
        "absolute", None, "constant")
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--bd-latest", "soon")
    assert_one_line_error(code, err, "--bd-latest")
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--lr-schedule", "step")
    assert_one_line_error(code, err, "--lr-schedule", "cosine or constant")
    other = tmp_path / "other" / "Chair"
    other.mkdir(parents=True)
    shutil.copy(chairs / "Chair" / "chair0.off", other / "c.off")
    (other / "c_labels.txt").write_text(
        (chairs / "Chair" / "chair0_labels.txt").read_text().replace("seat", "sitting"))
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--mode", "pre",
                           "--labels", other.parent)
    assert_one_line_error(code, err, "c.off", "part names")


KILL_AFTER_FIRST = """
import sys
from partseg_cli import render
original = render.render_mesh
calls = []
def slow(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)  # killed while rendering the second shape
    return original(*args, **kwargs)
render.render_mesh = slow
from partseg_cli.cli import main
sys.argv = ["partseg", "render", *sys.argv[1:]]
main()
"""


def test_killed_render_resumes_without_redoing_finished_shapes(capsys, monkeypatch,
                                                               chairs: Path,
                                                               tmp_path: Path) -> None:
    import subprocess

    work = tmp_path / "ws"
    args = [str(chairs), "--work", str(work), *SMALL]
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST, *args],
                            capture_output=True, text=True,
                            env={**__import__("os").environ, "PARTSEG_NO_PROGRESS": "1"})
    assert killed.returncode == -9
    workspace = Workspace.open(work)
    rendered = [s for s in workspace.shape_ids() if workspace.exists(shape_scope(s), "render")]
    assert len(rendered) == 1
    code, _, err = partseg(capsys, monkeypatch, "render", *args)
    assert code == 0 and "render: 3 computed, 1 cached" in err, err


def test_distill_one_shape_start_to_end(capsys, monkeypatch, chairs: Path, tmp_path: Path,
                                        ) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = partseg(capsys, monkeypatch, "distill", "--shape",
                           chairs / "Chair" / "chair3.off", "--teacher", "simulated",
                           "--parts", "back,seat,leg,arm", "--epochs", "5")
    assert code == 0, err
    workspace = Workspace.open(tmp_path / "runs" / "chair3")
    labelling = workspace.read_record(shape_scope(workspace.shape_ids()[0]), "distill",
                                      Labelling)
    assert labelling.part_names == ["back", "seat", "leg", "arm"]
    assert (labelling.point_labels >= 0).all()


def test_shards_split_the_shapes_between_array_tasks(capsys, monkeypatch, chairs: Path,
                                                     tmp_path: Path) -> None:
    work = tmp_path / "ws"
    for task in range(3):
        code, _, err = partseg(capsys, monkeypatch, "render", chairs, "--work", work,
                               "--shard", f"{task}/3", *SMALL)
        assert code == 0, err
    assert len(Workspace.open(work).shape_ids()) == 4
    computed = 0
    for task in range(2):
        code, _, err = partseg(capsys, monkeypatch, "superpoints", work, "--shard",
                               f"{task}/2")
        assert code == 0, err
        computed += int(err.split("superpoints: ")[1].split(" computed")[0])
    assert computed == 4
    code, _, err = partseg(capsys, monkeypatch, "superpoints", work, "--shard", "2/2")
    assert_one_line_error(code, err, "--shard")


def test_pre_alignment_trains_one_student_per_part_list(capsys, monkeypatch, chairs: Path,
                                                        tmp_path: Path) -> None:
    work = tmp_path / "ws"
    code, _, err = partseg(capsys, monkeypatch, "run", chairs, "--work", work,
                           "--teacher", "simulated", *SMALL)
    assert code == 0, err
    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "simulated",
                           "--parts", "back,seat", "--shape-id", "Chair_chair1")
    assert code == 0, err
    assert partseg(capsys, monkeypatch, "backproject", work)[0] == 0
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--mode", "pre",
                           "--epochs", "3")
    assert code == 0 and "distill: 4 computed" in err, err
    students = sorted(p.name for p in (work / "students").iterdir())
    assert len(students) == 2 and all(s.startswith("distill-Chair-") for s in students)
    workspace = Workspace.open(work)
    one = workspace.read_record(shape_scope("Chair_chair1"), "distill", Labelling)
    other = workspace.read_record(shape_scope("Chair_chair0"), "distill", Labelling)
    assert one.part_names == ["back", "seat"] and len(other.part_names) == 4
    assert one.point_probs.shape[1] == 2 and not one.training_shape
    assert workspace.info(shape_scope("Chair_chair1"), "distill")["params"][
        "alignment"] == "transductive"
    # --student saves one student: several part lists are refused
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--mode", "pre",
                           "--epochs", "3", "--train-ids", "*", "--student", "s")
    assert_one_line_error(code, err, "part lists", "--train-ids")


def test_align_axes_changes_the_student_key_and_a_saved_student_aligns_elsewhere(
        capsys, monkeypatch, chairs: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    work, later = tmp_path / "ws", tmp_path / "later"
    code, _, err = partseg(capsys, monkeypatch, "run", chairs, "--work", work,
                           "--teacher", "simulated", *SMALL)
    assert code == 0, err
    train = ["--mode", "pre", "--epochs", "2", "--train-ids", "Chair_chair[01]"]
    code, _, err = partseg(capsys, monkeypatch, "distill", work, *train, "--student", "plain")
    assert code == 0, err
    code, _, err = partseg(capsys, monkeypatch, "distill", work, *train, "--student",
                           "plain", "--align", "none")  # the paper's value: the same key
    assert code == 0 and "distill (student): 0 computed, 2 cached" in err, err
    code, _, err = partseg(capsys, monkeypatch, "distill", work, *train, "--student",
                           "turned", "--align", "axes")
    assert code == 0 and "distill (student): 2 computed" in err and "distill: 4 computed" in err
    plain, turned = (json.loads((work / n / "model.json").read_text()) for n in
                     ("plain", "turned"))
    assert plain["key"] != turned["key"] and turned["meta"]["config"]["align"] == "axes"
    assert "align" not in plain["meta"]["config"]
    with safe_open(str(work / "turned" / "weights.safetensors"), "pt") as f:
        assert f.get_tensor("align.reference").shape == (512, 3)
    with safe_open(str(work / "plain" / "weights.safetensors"), "pt") as f:
        assert "align.reference" not in f.keys()
    # applied in another workspace, the saved reference aligns the shapes as here
    (tmp_path / "two" / "Chair").mkdir(parents=True)
    for name in ("chair0.off", "chair0_labels.txt", "chair3.off", "chair3_labels.txt"):
        shutil.copy(chairs / "Chair" / name, tmp_path / "two" / "Chair" / name)
    code, _, err = partseg(capsys, monkeypatch, "run", tmp_path / "two", "--work", later,
                           "--teacher", "simulated", *SMALL)
    assert code == 0, err
    code, _, err = partseg(capsys, monkeypatch, "distill", later, "--mode", "pre",
                           "--student", work / "turned")
    assert code == 0 and "distill: 2 computed" in err, err
    here, there = Workspace.open(work), Workspace.open(later)
    for sid in ("Chair_chair0", "Chair_chair3"):
        np.testing.assert_allclose(
            there.read_record(shape_scope(sid), "distill", Labelling).point_probs,
            here.read_record(shape_scope(sid), "distill", Labelling).point_probs, atol=1e-5)
    code, _, err = partseg(capsys, monkeypatch, "distill", work, *train, "--align", "pca")
    assert_one_line_error(code, err, "--align", "pca")


def test_evaluate_label_files(capsys, monkeypatch, chairs: Path, tmp_path: Path) -> None:
    work = tmp_path / "ws"
    assert partseg(capsys, monkeypatch, "render", chairs, "--work", work, *SMALL)[0] == 0
    workspace = Workspace.open(work)
    ids = workspace.shape_ids()
    preds = tmp_path / "preds"
    preds.mkdir()
    for sid in ids:  # the ground truth itself, so every shape scores 100
        labels = workspace.read(shape_scope(sid), "shape").arrays["point_labels"]
        np.save(preds / f"{sid}.npy", labels)
    code, out, _ = partseg(capsys, monkeypatch, "evaluate", work, "--pred", preds,
                           "--json", tmp_path / "m.json")
    assert code == 0, out
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["overall"]["points"]["miou"] == 1.0
    assert report["categories"]["Chair"]["points"]["part_count"]["seat"] == len(ids)
    code, _, err = partseg(capsys, monkeypatch, "evaluate", work, "--pred", tmp_path / "no.npy")
    assert_one_line_error(code, err, "no.npy", "no such file")
    code, _, err = partseg(capsys, monkeypatch, "evaluate", work, "--pred",
                           preds / f"{ids[0]}.npy")
    assert_one_line_error(code, err, f"{ids[0]}.npy", f"{len(ids)} shapes")
    code, out, _ = partseg(capsys, monkeypatch, "evaluate", work, "--pred",
                           preds / f"{ids[0]}.npy", "--shape-id", ids[0])
    assert code == 0 and "100.0" in out


def test_inductive_student_saved_reused_and_applied_in_another_workspace(
        capsys, monkeypatch, chairs: Path, tmp_path: Path) -> None:
    work, later = tmp_path / "ws", tmp_path / "later"
    code, _, err = partseg(capsys, monkeypatch, "run", chairs, "--work", work,
                           "--teacher", "simulated", *SMALL)
    assert code == 0, err
    train = ["--mode", "pre", "--epochs", "2", "--student", "chair-v1"]
    code, _, err = partseg(capsys, monkeypatch, "distill", work, *train,
                           "--train-ids", "Chair_chair0", "--train-ids", "Chair_chair1")
    assert code == 0, err
    assert "distill (student): 2 computed" in err and "distill: 4 computed" in err, err
    assert (work / "chair-v1" / "model.json").is_file()
    workspace = Workspace.open(work)
    first = {sid: workspace.read_record(shape_scope(sid), "distill", Labelling)
             for sid in workspace.shape_ids()}
    assert [first[s].training_shape for s in sorted(first)] == [True, True, False, False]
    info = workspace.info(shape_scope("Chair_chair2"), "distill")
    assert info["params"]["alignment"] == "inductive"
    key = json.loads((work / "chair-v1" / "model.json").read_text())["key"]
    # unchanged training set and config: nothing retrained, nothing relabelled
    code, _, err = partseg(capsys, monkeypatch, "distill", work, *train,
                           "--train-ids", "Chair_chair[01]")
    assert "distill (student): 0 computed, 2 cached" in err and "distill: 0 computed" in err
    # a changed training set invalidates the student and every labelling made with it
    code, _, err = partseg(capsys, monkeypatch, "distill", work, *train,
                           "--train-ids", "Chair_chair[012]")
    assert code == 0 and "distill (student): 3 computed" in err, err
    assert "distill: 4 computed" in err
    assert json.loads((work / "chair-v1" / "model.json").read_text())["key"] != key

    # a later workspace applies the saved student as it is: no training there
    (tmp_path / "two" / "Chair").mkdir(parents=True)
    for name in ("chair0.off", "chair0_labels.txt", "chair3.off", "chair3_labels.txt"):
        shutil.copy(chairs / "Chair" / name, tmp_path / "two" / "Chair" / name)
    code, _, err = partseg(capsys, monkeypatch, "run", tmp_path / "two", "--work", later,
                           "--teacher", "simulated", *SMALL)
    assert code == 0, err
    code, _, err = partseg(capsys, monkeypatch, "distill", later, "--mode", "pre",
                           "--student", work / "chair-v1")
    assert code == 0 and "distill: 2 computed" in err and "student" not in err, err
    now = Workspace.open(work)
    other = Workspace.open(later)
    for sid, trained_on in (("Chair_chair0", True), ("Chair_chair3", False)):
        here = now.read_record(shape_scope(sid), "distill", Labelling)
        there = other.read_record(shape_scope(sid), "distill", Labelling)
        np.testing.assert_allclose(there.point_probs, here.point_probs, atol=1e-5)
        assert there.training_shape == trained_on
    # evaluate reports the shapes the student trained on apart from the others
    code, out, err = partseg(capsys, monkeypatch, "evaluate", later, "--method", "distill")
    assert code == 0, err
    assert "training shapes (1)" in out

    # bad students: one line, exit 2, nothing stored changes
    before = other.key(shape_scope("Chair_chair3"), "distill")
    code, _, err = partseg(capsys, monkeypatch, "distill", later, "--mode", "pre",
                           "--student", "nothing-here")
    assert_one_line_error(code, err, "nothing-here", "no such model folder")
    broken = tmp_path / "broken"
    shutil.copytree(work / "chair-v1", broken)
    (broken / "weights.safetensors").write_bytes(b"not safetensors")
    code, _, err = partseg(capsys, monkeypatch, "distill", later, "--mode", "pre",
                           "--student", broken)
    assert_one_line_error(code, err, "weights.safetensors", "corrupt")
    code, _, err = partseg(capsys, monkeypatch, "detect", later, "--teacher", "simulated",
                           "--parts", "back,seat", "--shape-id", "Chair_chair3")
    code, _, err = partseg(capsys, monkeypatch, "distill", later, "--mode", "pre",
                           "--student", work / "chair-v1")
    assert_one_line_error(code, err, "Chair_chair3", "['back', 'seat']")
    code, _, err = partseg(capsys, monkeypatch, "distill", work, *train,
                           "--train-ids", "Lamp*")
    assert_one_line_error(code, err, "Lamp*")
    assert other.key(shape_scope("Chair_chair3"), "distill") == before


def test_concurrent_shards_train_one_student_and_run_pre_aligns_each_category(
        capsys, monkeypatch, chairs: Path, tmp_path: Path) -> None:
    import os
    import subprocess

    # a second category: two of the chairs with another part list
    (chairs / "Stool").mkdir()
    for index in (0, 1):
        shutil.copy(chairs / "Chair" / f"chair{index}.off", chairs / "Stool" / f"s{index}.off")
        (chairs / "Stool" / f"s{index}_labels.txt").write_text(
            (chairs / "Chair" / f"chair{index}_labels.txt").read_text().replace("seat", "top"))
    work = tmp_path / "ws"
    # `run --shard --distill pre`: the first shard waits for the others' shapes, the shard
    # that completes the collection trains one student per category and labels them all
    code, _, err = partseg(capsys, monkeypatch, "run", chairs, "--work", work, "--teacher",
                           "simulated", "--distill", "pre", "--shard", "0/2", *SMALL)
    assert code == 0 and "3 of 6 shapes are not through backproject" in err, err
    code, out, err = partseg(capsys, monkeypatch, "run", chairs, "--work", work, "--teacher",
                             "simulated", "--distill", "pre", "--shard", "1/2", *SMALL)
    assert code == 0 and "distill (student): 6 computed" in err, err
    assert "distill: 6 computed" in err and "[distill]" in out
    assert sorted(p.name for p in (work / "students").iterdir()) == [
        "distill-Chair", "distill-Stool"]
    stool = Workspace.open(work).read_record(shape_scope("Stool_s0"), "distill", Labelling)
    assert "top" in stool.part_names and "seat" not in stool.part_names

    # two `distill --shard` processes at once: one trains, the other waits and reuses
    env = {**os.environ, "PARTSEG_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(cli.__file__).resolve().parents[1])}
    shards = [subprocess.Popen([sys.executable, "-m", "partseg_cli.cli", "distill", str(work),
                                "--mode", "pre", "--output", "shared", "--epochs", "2",
                                "--shard", f"{k}/2"], env=env, stderr=subprocess.PIPE,
                               text=True) for k in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in shards]
    assert all(p.returncode == 0 for p in shards), errs
    # each category's student is trained by exactly one of the processes
    counts = [e.split("distill.shared (student): ")[1].split(" cached")[0] for e in errs]
    computed = [int(c.split(" computed, ")[0]) for c in counts]
    cached = [int(c.split(" computed, ")[1]) for c in counts]
    assert sum(computed) == 6 and sum(cached) == 6, errs
    workspace = Workspace.open(work)
    keys = {workspace.info(shape_scope(s), "distill.shared")["params"]["student"]
            for s in workspace.shape_ids() if s.startswith("Chair")}
    assert len(keys) == 1
    assert all(workspace.exists(shape_scope(s), "distill.shared") for s in workspace.shape_ids())

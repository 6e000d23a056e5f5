"""Usage errors of every command: one line on stderr, exit 2, never a traceback.

The commands are enumerated from the typer app, so a new command is covered without
editing this file."""

from __future__ import annotations

import re
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer

from partseg_cli import cli

COMMANDS = typer.main.get_command(cli.app).commands


def run(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["partseg", *map(str, args)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    assert lines[0].startswith("partseg: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _numeric_option(command: typer.main.TyperCommand) -> str | None:
    for param in command.params:
        if (param.param_type_name == "option" and isinstance(param.default, int | float)
                and not isinstance(param.default, bool)):
            return param.opts[0]
    return None


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_bad_value(capsys, monkeypatch, tmp_path: Path, name: str) -> None:
    option = _numeric_option(COMMANDS[name])
    if option is None:  # nothing numeric to mistype: a workspace that does not exist
        assert_one_line(*run(capsys, monkeypatch, name, tmp_path / "missing"))
        return
    # the bad value is named first, before any missing argument
    code, err = run(capsys, monkeypatch, name, option, "four", tmp_path)
    assert_one_line(code, err, f"partseg {name}", option)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_missing_argument(capsys, monkeypatch, name: str) -> None:
    assert_one_line(*run(capsys, monkeypatch, name))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_unknown_option(capsys, monkeypatch, tmp_path: Path, name: str) -> None:
    code, err = run(capsys, monkeypatch, name, tmp_path, "--no-such-option")
    assert_one_line(code, err, "--no-such-option", f"partseg {name} --help")


def test_unknown_command_and_bare_partseg(capsys, monkeypatch) -> None:
    assert_one_line(*run(capsys, monkeypatch, "segment"), "segment")
    assert_one_line(*run(capsys, monkeypatch), "no command given", "render")


def test_help_and_version_still_exit_0(capsys, monkeypatch) -> None:
    assert run(capsys, monkeypatch, "--version")[0] == 0
    assert run(capsys, monkeypatch, "vote", "--help")[0] == 0


def test_ctrl_c_is_one_line_exit_130(capsys, monkeypatch, tmp_path: Path) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("partseg_cli.store.Workspace.open", interrupted)
    code, err = run(capsys, monkeypatch, "inspect", tmp_path)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 130 and len(lines) == 1 and "interrupted" in lines[0], err


def test_installed_typer_is_in_the_supported_range() -> None:
    """cli.main() catches typer's own exception classes; pyproject pins the range."""
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    low, high = re.search(r'"typer>=([\d.]+),<([\d.]+)"', pyproject).groups()

    def as_tuple(text: str) -> tuple[int, ...]:
        return tuple(int(v) for v in text.split(".")[:2])

    assert as_tuple(low) <= as_tuple(version("typer")) < as_tuple(high)


# --- bad inputs whose one line must say what is wrong, and with which file -----------------

TINY = ["--views", "2", "--resolution", "48", "--points", "300"]


@pytest.fixture
def rendered(capsys, monkeypatch, tmp_path: Path) -> Path:
    """A workspace holding one labelled chair (parts arm, back, leg, seat), rendered."""
    from test_cli import EXAMPLES, partseg

    work = tmp_path / "ws"
    code, _, err = partseg(capsys, monkeypatch, "render", EXAMPLES / "Chair" / "chair0.off",
                           "--work", work, *TINY)
    assert code == 0, err
    return work


def test_parts_that_match_none_of_the_shapes_parts_say_so(capsys, monkeypatch,
                                                          rendered: Path) -> None:
    from test_cli import partseg

    code, _, err = partseg(capsys, monkeypatch, "detect", rendered, "--teacher", "simulated",
                           "--parts", "foo,bar")
    # not "has no labels": it has them, under other names; both lists are shown
    assert_one_line(code, err, "do not match", "foo, bar", "arm, back, leg, seat")
    assert "no ground-truth" not in err and "has none" not in err


def test_corrupt_zarr_json_is_reported_corrupt_naming_the_file(capsys, monkeypatch,
                                                               rendered: Path) -> None:
    from test_cli import partseg

    meta = rendered / "store.zarr" / "shapes" / "Chair_chair0" / "render" / "zarr.json"
    meta.write_text("{ not json")
    code, _, err = partseg(capsys, monkeypatch, "detect", rendered, "--teacher", "simulated")
    assert_one_line(code, err, "corrupt", str(meta))
    assert "no 'render' output" not in err
    code, out, err = partseg(capsys, monkeypatch, "status", rendered, "--json")
    render = __import__("json").loads(out)["stages"]["render"]
    assert code == 0 and render["corrupt_shapes"] == ["Chair_chair0"]
    assert render["done"] == 0 and render["missing"] == 0  # not "no output yet"
    code, out, _ = partseg(capsys, monkeypatch, "status", rendered)
    assert "corrupt render" in out and "Chair_chair0" in out


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 20,
                                     bytes(range(256)) * 12])
def test_garbage_encoder_checkpoint_is_one_line(capsys, monkeypatch, rendered: Path,
                                                tmp_path: Path, content: bytes) -> None:
    from test_cli import partseg

    garbage = tmp_path / "encoder.pt"
    garbage.write_bytes(content)
    code, _, err = partseg(capsys, monkeypatch, "distill", rendered, "--encoder", "pointnet",
                           "--encoder-checkpoint", garbage)
    assert_one_line(code, err, str(garbage), "not an encoder checkpoint")


def test_a_pickle_of_objects_as_checkpoint_is_one_line_and_runs_nothing(
        capsys, monkeypatch, rendered: Path, tmp_path: Path) -> None:
    import pickle

    from test_cli import partseg

    checkpoint, ran = tmp_path / "encoder.pt", tmp_path / "ran"
    with open(checkpoint, "wb") as handle:  # torch.load warns about its protocol, too
        pickle.dump(_Touch(str(ran)), handle, protocol=4)
    code, _, err = partseg(capsys, monkeypatch, "distill", rendered, "--encoder", "pointnet",
                           "--encoder-checkpoint", checkpoint)
    assert_one_line(code, err, str(checkpoint), "refused unread")
    assert not ran.exists()


class _Touch:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_file_given_as_model_folder_is_one_line(capsys, monkeypatch, rendered: Path,
                                                  tmp_path: Path) -> None:
    from test_cli import partseg

    garbage = tmp_path / "student"
    garbage.write_bytes(bytes(range(256)) * 4)
    code, _, err = partseg(capsys, monkeypatch, "distill", rendered, "--mode", "pre",
                           "--student", garbage)
    assert_one_line(code, err, str(garbage), "is a file, not a partseg model folder")


def _pred_cases(folder: Path) -> dict[str, tuple[Path, str]]:
    """Bad --pred files for a 300-point shape: path and what the one line must say."""
    import os

    import numpy as np

    cases = {}
    short = folder / "short.npy"
    np.save(short, np.zeros(7, np.int64))
    cases["wrong length"] = short, "7 labels, but shape Chair_chair0 has 300 points"
    fractions = folder / "fractions.npy"
    np.save(fractions, np.full(300, 0.7))
    cases["fractions"] = fractions, "whole numbers, found 0.7"
    text = folder / "fractions.txt"
    text.write_text("0\n1.5\n" * 150)
    cases["fractions in text"] = text, "whole numbers, found 1.5"
    strings = folder / "strings.npy"
    np.save(strings, np.array(["seat"] * 300))
    cases["strings"] = strings, "must be integers"
    archive = folder / "two.npy"
    np.savez(folder / "two.npz", a=np.zeros(300, np.int64), b=np.zeros(300, np.int64))
    os.replace(folder / "two.npz", archive)
    cases["npz of two arrays named .npy"] = archive, "an .npz archive of 2 arrays"
    empty = folder / "empty.npy"
    empty.write_bytes(b"")
    cases["empty"] = empty, "cannot read as numpy data"
    return cases


def test_bad_pred_files_name_the_file(capsys, monkeypatch, rendered: Path,
                                      tmp_path: Path) -> None:
    from test_cli import partseg

    for case, (path, fragment) in _pred_cases(tmp_path).items():
        code, _, err = partseg(capsys, monkeypatch, "evaluate", rendered, "--pred", path)
        assert "Traceback" not in err, (case, err)
        assert_one_line(code, err, str(path), fragment)
    # in a folder of predictions, the file of the shape is named, not only the shape
    folder = tmp_path / "preds"
    folder.mkdir()
    (folder / "Chair_chair0.txt").write_text("0\n1\n")
    code, _, err = partseg(capsys, monkeypatch, "evaluate", rendered, "--pred", folder)
    assert_one_line(code, err, str(folder / "Chair_chair0.txt"), "2 labels")


def test_pred_loaded_by_content_and_whole_floats_accepted(capsys, monkeypatch,
                                                          rendered: Path,
                                                          tmp_path: Path) -> None:
    import os

    import numpy as np
    from test_cli import partseg

    from partseg_cli.store import Workspace, shape_scope

    truth = Workspace.open(rendered).read(shape_scope("Chair_chair0"), "shape").arrays[
        "point_labels"]
    archive = tmp_path / "labels.npy"  # an .npz under a .npy name: np.load reads it
    np.savez(tmp_path / "labels.npz", labels=truth)
    os.replace(tmp_path / "labels.npz", archive)
    whole = tmp_path / "whole.npy"  # whole numbers stored as floats lose nothing
    np.save(whole, truth.astype(np.float64))
    for path in (archive, whole):
        code, out, err = partseg(capsys, monkeypatch, "evaluate", rendered, "--pred", path)
        assert code == 0 and "100.0" in out, (path, err)


@pytest.mark.parametrize("command", ["export", "show", "report"])
def test_a_method_stored_nowhere_is_refused_once(capsys, monkeypatch, rendered: Path,
                                                 tmp_path: Path, command: str) -> None:
    """As `evaluate --method`: one line saying no such labelling is stored, not a line per
    shape telling the user to run `partseg nosuch`, nor a report page without scores."""
    from test_cli import partseg

    out = tmp_path / ("r.html" if command == "report" else "out")
    code, _, err = partseg(capsys, monkeypatch, command, rendered, "--out", out,
                           "--method", "nosuch")
    assert_one_line(code, err, "no labelling")
    assert "partseg nosuch" not in err and not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (["report", "{ws}", "--out", "{tmp}/r.html", "--convention", "coco"], "--convention"),
    (["report", "{ws}", "--out", "{tmp}/r.html", "--max-pictures", "-1"], "--max-pictures"),
    (["show", "{ws}", "--out", "{tmp}/pics", "--view", "99"], "no view 99"),
])
def test_report_and_show_refuse_values_they_used_to_pass_over(
        capsys, monkeypatch, rendered: Path, tmp_path: Path, args: list[str],
        fragment: str) -> None:
    """A convention or count `report` cannot use was a page without scores or pictures,
    exit 0; `show` of a view no shape has added a "pictures in" line to the error."""
    from test_cli import partseg

    filled = [a.format(ws=rendered, tmp=tmp_path) for a in args]
    code, _, err = partseg(capsys, monkeypatch, *filled)
    assert_one_line(code, err, fragment)


@pytest.mark.parametrize("content", [b"", b"OFF\n"])
def test_input_of_which_nothing_loads_is_exit_2_and_makes_no_workspace(
        capsys, monkeypatch, tmp_path: Path, content: bytes) -> None:
    """A zero-byte .npy was reported as Ctrl-C (np.load's EOFError, exit 130); an empty
    OFF left an empty new workspace behind."""
    from test_cli import partseg

    for name in ("cloud.npy", "mesh.off"):
        path = tmp_path / name
        path.write_bytes(content)
        code, _, err = partseg(capsys, monkeypatch, "render", path, "--work", tmp_path / "ws")
        assert_one_line(code, err, str(path))
        assert not (tmp_path / "ws").exists()


def test_a_report_into_a_read_only_folder_names_the_report(tmp_path: Path) -> None:
    """The clean-up of the never-made temporary file failed too (EROFS) and replaced the
    error naming the report with one naming a hidden .tmp file."""
    import errno

    from partseg_cli.atomic import write_text
    from partseg_cli.errors import WriteError

    target = tmp_path / "r.json"

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "write_text", read_only)
        patch.setattr(Path, "unlink", read_only)
        with pytest.raises(WriteError, match=f"cannot write {target}: the file system is "
                                             "read-only"):
            write_text(target, "{}")


def test_distill_checks_model_even_when_everything_is_cached(capsys, monkeypatch,
                                                             tmp_path: Path) -> None:
    """`distill W --model M` runs no teacher (the stored detections are used), so M was
    never looked at: a garbage M must still be named, as `detect` would name it."""
    from test_cli import EXAMPLES, partseg

    work = tmp_path / "ws"
    code, _, err = partseg(capsys, monkeypatch, "run", EXAMPLES / "Chair" / "chair0.off",
                           "--work", work, "--teacher", "simulated", *TINY)
    assert code == 0, err
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--epochs", "1")
    assert code == 0, err  # stored: the calls below would be cached
    missing = tmp_path / "no-such-model"
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--epochs", "1",
                           "--model", missing)
    assert_one_line(code, err, str(missing), "does not exist")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{}")
    for teacher, says in (("owlv2", "holds no model"), ("trained", "not a partseg model")):
        code, _, err = partseg(capsys, monkeypatch, "distill", work, "--epochs", "1",
                               "--teacher", teacher, "--model", garbage)
        assert_one_line(code, err, str(garbage), says)
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--epochs", "1",
                           "--teacher", "simulated", "--model", garbage)
    assert code == 0, err  # the simulated teacher takes no model, as in `detect`


def _detect_warnings(capsys, monkeypatch, work: Path, option: str, *args: str
                     ) -> tuple[int, str, list[str]]:
    """`detect WORK --teacher simulated ARGS`: its exit code, stderr and the warnings that
    name ``option``."""
    import warnings

    from test_cli import partseg

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "simulated",
                               *args)
    return code, err, [str(w.message) for w in caught if option in str(w.message)]


def test_parts_matching_only_some_ground_truth_names_warn_once(capsys, monkeypatch,
                                                               rendered: Path) -> None:
    code, err, lines = _detect_warnings(capsys, monkeypatch, rendered, "--parts",
                                        "--parts", "back,seat,wheel")
    assert code == 0, err
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith("detect: --parts back,seat,wheel")
    assert "arm, leg are not asked for" in lines[0], lines[0]
    assert "wheel in no ground truth" in lines[0], lines[0]
    code, err, lines = _detect_warnings(capsys, monkeypatch, rendered, "--parts",
                                        "--parts", "arm,back,leg,seat")
    assert code == 0 and not lines, err
    # none matches: the simulated teacher's one error line says it, no warning first
    code, err, lines = _detect_warnings(capsys, monkeypatch, rendered, "--parts",
                                        "--parts", "foo,bar", "--force")
    assert code == 2 and not lines, err


def test_a_model_given_to_the_simulated_teacher_is_named_as_ignored(capsys, monkeypatch,
                                                                    rendered: Path) -> None:
    code, err, lines = _detect_warnings(capsys, monkeypatch, rendered, "--model",
                                        "--model", "models/chair-teacher")
    assert code == 0, err
    assert lines == ["detect: --model models/chair-teacher is ignored: --teacher simulated "
                     "is a measuring instrument that reads the ground truth and takes no "
                     "model"], lines
    code, err, lines = _detect_warnings(capsys, monkeypatch, rendered, "--model", "--force")
    assert code == 0 and not lines, err

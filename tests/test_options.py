"""Values that parse but make no sense are refused before any work, in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from partseg_cli import cli
from partseg_cli.options import problem

CHAIR = Path(__file__).parents[1] / "examples" / "toy_chairs" / "Chair" / "chair0.off"

BAD = [
    ("render", "--views", "0", "must be at least 1"),
    ("render", "--resolution", "0", "must be at least 1"),
    ("render", "--resolution", "-5", "must be at least 1"),
    ("render", "--points", "0", "must be at least 1"),
    ("render", "--radius", "nan", "not a finite number"),
    ("detect", "--parts", "arm,arm,leg", "arm given more than once"),
    ("detect", "--batch-size", "0", "must be at least 1"),
    ("superpoints", "--k", "0", "must be at least 1"),
    ("backproject", "--whole-object-fraction", "2", "must be at most 1"),
    ("vote", "--threshold", "nan", "not a finite number"),
    ("vote", "--threshold", "-0.5", "must be at least 0"),
    ("distill", "--epochs", "0", "must be at least 1"),
    ("distill", "--epochs", "-3", "must be at least 1"),
    ("distill", "--lr", "nan", "not a finite number"),
    ("distill", "--lr", "0", "must be more than 0"),
    ("distill", "--tau", "-1", "must be at least 0"),
    ("adapt", "--epochs", "0", "must be at least 1"),
    ("show", "--size", "0", "must be at least 1"),
    ("train-teacher", "--epochs", "0", "must be at least 1"),
    ("train-teacher", "--restarts", "0", "must be at least 1"),
    ("train-teacher", "--target-miou", "0", "must be more than 0"),
    ("train-teacher", "--target-miou", "1.5", "must be at most 1"),
    ("train-teacher", "--calibration-folds", "1", "must be at least 2"),
]


@pytest.mark.parametrize(("command", "option", "value", "message"), BAD)
def test_bad_value_is_one_line_before_any_work(capsys, monkeypatch, tmp_path: Path,
                                               command: str, option: str, value: str,
                                               message: str) -> None:
    takes_inputs = command in ("render", "train-teacher")
    where = [CHAIR, "--work" if command == "render" else "--out", tmp_path / "new"] \
        if takes_inputs else [tmp_path / "missing_ws"]
    extra = ["--out", tmp_path / "pics"] if command == "show" else []
    monkeypatch.setattr(sys, "argv", ["partseg", command, *map(str, where + extra),
                                      option, value])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(lines) == 1, err
    assert lines[0] == f"partseg: error: partseg {command}: {option}: " + lines[0].split(
        f"{option}: ", 1)[1] and message in lines[0]
    assert not (tmp_path / "new").exists()  # refused before any work


def test_good_values_pass() -> None:
    for name, value in [("views", 1), ("lr", 1e-3), ("threshold", 0.0),
                        ("parts", "arm,leg"), ("epochs", None), ("view", [0, 3])]:
        assert problem(name, value) is None, name
    assert problem("view", [0, -1]) is not None


def test_exit_codes_some_failed_1_none_usable_2(capsys, monkeypatch, tmp_path: Path) -> None:
    """README: 1 when some shapes failed and the others are done, 2 when none was usable
    (a lone failed shape is one error line)."""
    from partseg_cli.cli import finish
    from partseg_cli.errors import PartsegError
    from partseg_cli.pipeline import StageReport

    some = StageReport("vote", computed=["a"], failed={"b": "b: bad"})
    with pytest.raises(cli.typer.Exit) as exit_info:
        finish([some])
    assert exit_info.value.exit_code == 1
    with pytest.raises(PartsegError, match="^vote: b: bad$"):
        finish([StageReport("vote", failed={"b": "b: bad"})])
    with pytest.raises(cli.typer.Exit) as exit_info:
        finish([StageReport("shape", computed=["a", "b"]),
                StageReport("vote", failed={"a": "a: bad", "b": "b: bad"})])
    assert exit_info.value.exit_code == 2
    finish([StageReport("vote", computed=["a"], skipped=["b"])])  # all fine: returns

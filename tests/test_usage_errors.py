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

"""Report and export files are written atomically; unwritable outputs are refused
before any work, in one line with exit 2."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

from partseg_cli import cli
from partseg_cli.atomic import atomic_path, write_text
from partseg_cli.errors import WriteError
from partseg_cli.store import Workspace


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_text(target, "old")
    with pytest.raises(WriteError, match=f"cannot write {target}: no space left"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    write_text(target, "new")
    assert target.read_text() == "new"


def run(capsys, monkeypatch, *args: object) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["partseg", *map(str, args)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_evaluate_report_into_a_missing_folder_fails_before_scoring(
        capsys, monkeypatch, tmp_path: Path, option: str) -> None:
    from partseg_cli import evaluate

    Workspace.open(tmp_path / "ws", create=True)
    monkeypatch.setattr(evaluate, "run", lambda *a, **k: pytest.fail("scored anyway"))
    target = tmp_path / "missing" / "report.out"
    code, err = run(capsys, monkeypatch, "evaluate", tmp_path / "ws", option, target)
    assert code == 2
    assert f"{option} {target}: {target.parent} no such folder" in one_line(err)
    code, err = run(capsys, monkeypatch, "evaluate", tmp_path / "ws", option, tmp_path)
    assert code == 2 and "is a folder, not a file" in one_line(err)


def test_export_out_naming_a_file_is_refused(capsys, monkeypatch, tmp_path: Path) -> None:
    Workspace.open(tmp_path / "ws", create=True)
    (tmp_path / "taken").write_text("a file")
    code, err = run(capsys, monkeypatch, "export", tmp_path / "ws", "--out",
                    tmp_path / "taken" / "sub")
    assert code == 2 and "taken is a file, not a folder" in one_line(err)


def test_full_workspace_stops_the_run_in_one_line(capsys, monkeypatch, tmp_path: Path
                                                  ) -> None:
    from partseg_cli import store

    def full(self, path, arrays, attrs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store._ZarrBackend, "write", full)
    shape = Path(__file__).parents[1] / "examples" / "toy_chairs" / "Chair" / "chair0.off"
    code, err = run(capsys, monkeypatch, "render", shape, "--work", tmp_path / "ws",
                    "--views", 1, "--resolution", 16, "--points", 100)
    assert code == 2
    line = one_line(err)
    assert line.startswith("partseg: error: cannot write ") and "no space left" in line

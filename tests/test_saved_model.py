"""Saved model folders: round trip, atomic replace, and one-line refusals."""

from pathlib import Path

import pytest
import torch

from partseg_cli.errors import ModelError
from partseg_cli.saved_model import (
    WEIGHTS,
    SavedModel,
    check_weights,
    is_model_folder,
    load_model,
    resolve_model_path,
    save_model,
)


def _model() -> SavedModel:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    return SavedModel(kind="demo", key="abc", meta={"part_names": ["a", "b", "c"]},
                      state_dict=net.state_dict())


def test_round_trip(tmp_path: Path):
    model = _model()
    save_model(tmp_path / "m", model)
    loaded = load_model(tmp_path / "m", kind="demo")
    assert loaded.key == "abc" and loaded.meta["part_names"] == ["a", "b", "c"]
    for name, value in model.state_dict.items():
        assert torch.equal(loaded.state_dict[name], value)


def test_replace_keeps_one_model(tmp_path: Path):
    save_model(tmp_path / "m", _model())
    save_model(tmp_path / "m", kind="demo", key="new", meta={}, state_dict={})
    assert load_model(tmp_path / "m").key == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_refuses_foreign_folder_and_kind(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.txt").write_text("user data")
    with pytest.raises(ModelError, match="not a partseg model folder"):
        save_model(data, _model())
    assert (data / "keep.txt").read_text() == "user data"
    with pytest.raises(ModelError, match="not a partseg model folder"):
        load_model(data)
    save_model(tmp_path / "m", _model())
    with pytest.raises(ModelError, match="expected 'other'"):
        load_model(tmp_path / "m", kind="other")
    with pytest.raises(ModelError, match="no such model folder"):
        load_model(tmp_path / "missing")


def test_corrupt_weights_are_one_line(tmp_path: Path):
    save_model(tmp_path / "m", _model())
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="corrupt") as err:
        load_model(tmp_path / "m")
    assert "\n" not in str(err.value)


def test_resolve_in_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "runs" / "new"
    work.mkdir(parents=True)
    save_model(tmp_path / "runs" / "chairs" / "chair-v1", _model())
    path = resolve_model_path("../chairs/chair-v1", work)
    assert is_model_folder(path)
    assert resolve_model_path("chair-v1", work) == work / "chair-v1"


def test_weights_checked_without_loading_them(tmp_path: Path):
    save_model(tmp_path / "m", _model())
    check_weights(tmp_path / "m")  # whole: no error
    weights = tmp_path / "m" / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-4])  # truncated
    with pytest.raises(ModelError, match="corrupt or unreadable"):
        check_weights(tmp_path / "m")
    weights.write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="corrupt or unreadable"):
        check_weights(tmp_path / "m")


def _finished_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_save_killed_between_its_renames_loses_no_model(tmp_path: Path):
    """Killed after moving the old model aside and before renaming the new one in: the
    next read puts the old model back (before: "no such model folder", the model only in
    a hidden .old-* folder forever) and the new one's leftover goes."""
    import subprocess
    import sys
    import textwrap

    from partseg_cli.saved_model import read_document

    save_model(tmp_path / "m", kind="demo", key="old", meta={}, state_dict={})
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from partseg_cli.saved_model import save_model
        rename = Path.rename
        def killed_after_move_aside(self, target):
            rename(self, target)
            if ".old-" in str(target):
                os._exit(9)
        Path.rename = killed_after_move_aside
        save_model(Path({str(tmp_path / "m")!r}), kind="demo", key="new", meta={{}},
                   state_dict={{}})
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert not (tmp_path / "m").exists()
    assert read_document(tmp_path / "m")["key"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_leftovers_of_live_or_foreign_saves_are_kept(tmp_path: Path):
    import os
    import socket

    from partseg_cli.saved_model import clean_leftovers

    host, dead = socket.gethostname(), _finished_pid()
    save_model(tmp_path / "m", kind="demo", key="k", meta={}, state_dict={})
    names = {"live": f".m.tmp-{os.getpid()}-0123abcd-{host}",
             "foreign": f".m.old-{dead}-0123abcd-elsewhere",
             "dead": f".m.tmp-{dead}-0123abcd-{host}",
             "dead old": f".m.old-{dead}-4567abcd-{host}"}
    for name in names.values():
        (tmp_path / name).mkdir()
    done, kept = clean_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m", names["live"], names["foreign"]])
    assert len(done) == 2 and all("removed" in line for line in done)
    assert any("process" in line and names["live"] in line for line in kept)
    assert any("host elsewhere" in line for line in kept)

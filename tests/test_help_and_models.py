"""Help with examples, the mission examples as written, and model loading that fails
fast and in one line (offline hub, a folder of the wrong model type, a bad --device)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from test_cli import EXAMPLES, assert_one_line_error, partseg

from partseg_cli import detect
from partseg_cli.cli import app
from partseg_cli.errors import ModelError
from partseg_cli.help_text import EXAMPLES as HELP_EXAMPLES


def test_every_command_shows_examples_and_the_install_text(capsys, monkeypatch) -> None:
    import typer

    commands = typer.main.get_command(app).commands
    assert set(commands) <= set(HELP_EXAMPLES)
    for name in commands:
        code, out, _ = partseg(capsys, monkeypatch, name, "--help")
        assert code == 0 and "Examples:" in out and f"partseg {name}" in out, name
    code, out, _ = partseg(capsys, monkeypatch, "--help")
    assert "partseg render data/ShapeNetPart" in out
    assert "partseg distill --mode tta --shape chair.ply" in out
    code, out, _ = partseg(capsys, monkeypatch, "sam-refine", "--help")
    assert "pip install 'partseg[sam]'" in " ".join(out.split()).replace("│ ", "")


def test_render_and_run_default_to_a_workspace_under_runs(capsys, monkeypatch,
                                                          tmp_path: Path) -> None:
    data = tmp_path / "data" / "ShapeNetPart"
    shutil.copytree(EXAMPLES, data)
    monkeypatch.chdir(tmp_path)
    code, _, err = partseg(capsys, monkeypatch, "render", "data/ShapeNetPart", "--views",
                           "2", "--resolution", "64", "--points", "500")
    assert code == 0, err
    assert "workspace: runs/ShapeNetPart" in err
    assert (tmp_path / "runs" / "ShapeNetPart" / "partseg.json").is_file()
    code, _, err = partseg(capsys, monkeypatch, "run", "data/ShapeNetPart", "--teacher",
                           "simulated", "--views", "2", "--resolution", "64", "--points",
                           "500")
    assert code == 0 and "render: 0 computed, 4 cached" in err, err


def test_bad_device_is_one_line(capsys, monkeypatch, tmp_path: Path) -> None:
    code, _, err = partseg(capsys, monkeypatch, "detect", tmp_path, "--device", "gpu")
    assert_one_line_error(code, err, "--device", "'gpu' is not a device", "cuda:N")


def test_model_folder_of_another_type_is_named(tiny_models) -> None:
    with pytest.raises(ModelError, match="holds a 'clipseg' model, not 'owlv2'") as info:
        detect.load_teacher("owlv2", model=str(tiny_models["clipseg"]))
    assert "\n" not in str(info.value)


def test_unreachable_hub_fails_at_once(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # port 9 on loopback: nothing listens, the connection is refused at once
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert detect.hub_offline()
    start = time.perf_counter()
    with pytest.raises(ModelError, match="unreachable") as info:
        detect.load_teacher("owlvit", model="google/owlvit-base-patch32", device="cpu")
    assert time.perf_counter() - start < 15 and "\n" not in str(info.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert detect.hub_offline()

"""`partseg show` and `--png`: debug pictures a person can read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import EXAMPLES, partseg

from partseg_cli.palette import ERROR_CLASSES, legend, part_palette
from partseg_cli.store import Workspace

TINY = ["--views", "2", "--resolution", "96", "--points", "800"]


def colours_in(path: Path) -> set[tuple[int, int, int]]:
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    return {tuple(int(v) for v in c) for c in np.unique(pixels, axis=0)}


@pytest.fixture
def voted(capsys, monkeypatch, tmp_path: Path) -> Path:
    work = tmp_path / "ws"
    code, _, err = partseg(capsys, monkeypatch, "run", EXAMPLES / "Chair" / "chair0.off",
                           "--work", work, "--teacher", "simulated", *TINY)
    assert code == 0, err
    return work


def test_show_draws_teacher_labels_truth_errors_and_legend(capsys, monkeypatch, voted: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "pics"
    code, _, err = partseg(capsys, monkeypatch, "show", voted, "--shape", "Chair_chair0",
                           "--out", out)
    assert code == 0, err
    paths = sorted(out.glob("*.png"))
    assert [p.name for p in paths] == ["Chair_chair0_view00.png", "Chair_chair0_view01.png"]
    picture = Image.open(paths[0])
    assert picture.width > 4 * 96  # teacher, prediction, ground truth, errors
    colours = colours_in(paths[0])
    for colour in part_palette(4):  # every part's colour appears (panels and legend)
        assert tuple(int(c) for c in colour) in colours
    for _, colour in ERROR_CLASSES[:2]:  # the error map shows correct and wrong pixels
        assert colour in colours


def test_png_option_on_stages_and_pixel_teachers(capsys, monkeypatch, voted: Path,
                                                 tmp_path: Path) -> None:
    code, _, err = partseg(capsys, monkeypatch, "vote", voted, "--png", tmp_path / "vote")
    assert code == 0, err
    assert len(list((tmp_path / "vote").glob("Chair_chair0_view*.png"))) == 2
    code, _, err = partseg(capsys, monkeypatch, "detect", voted, "--teacher",
                           "simulated-pixels", "--png", tmp_path / "detect")
    assert code == 0, err
    narrow = Image.open(tmp_path / "detect" / "Chair_chair0_view00.png")
    assert narrow.width < Image.open(tmp_path / "vote" / "Chair_chair0_view00.png").width
    # pixel-map teacher: its part colours are blended into the render, not drawn flat
    assert len(colours_in(tmp_path / "detect" / "Chair_chair0_view00.png")) > 20


def test_show_refuses_a_view_the_shape_lacks(capsys, monkeypatch, voted: Path,
                                             tmp_path: Path) -> None:
    code, _, err = partseg(capsys, monkeypatch, "show", voted, "--out", tmp_path / "p",
                           "--view", "7")
    assert code == 2 and "no view 7" in err and "Traceback" not in err
    assert Workspace.open(voted).shape_ids() == ["Chair_chair0"]


def test_legend_wraps_long_part_lists() -> None:
    entries = [(f"part number {i}", c) for i, c in enumerate(part_palette(20))]
    assert legend(entries, width=300).height > legend(entries[:2], width=300).height

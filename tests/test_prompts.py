"""Prompts users control: clean names, --category, --prompt on run, the text sent stored;
and the counts and warnings a run prints."""

from __future__ import annotations

import shutil
from pathlib import Path

from test_cli import EXAMPLES, SMALL, assert_one_line_error, partseg

from partseg_cli import detect
from partseg_cli.records import Boxes, PixelMaps
from partseg_cli.store import Workspace, shape_scope


def test_names_are_cleaned_for_prompting() -> None:
    assert detect.prompt_name("StorageFurniture") == "storage furniture"
    assert detect.prompt_name("frame_horizontal_bar") == "frame horizontal bar"
    assert detect.prompt_name("  data-wire ") == "data wire"
    assert detect.format_prompts(["frame_horizontal_bar"], category="StorageFurniture") == \
        ["a frame horizontal bar of a storage furniture"]
    caption, spans = detect.grounding_caption(["back_rest", "leg"], category="Chair")
    assert caption == "a back rest of a chair . a leg of a chair ."
    assert [caption[s:e] for s, e in spans] == ["back rest", "leg"]


def test_category_and_prompt_reach_the_teacher_and_are_stored(capsys, monkeypatch,
                                                              tmp_path: Path,
                                                              tiny_models) -> None:
    data, work = tmp_path / "data", tmp_path / "ws"
    shutil.copytree(EXAMPLES, data)
    model = str(tiny_models["owlv2"])
    code, _, err = partseg(capsys, monkeypatch, "run", data, "--work", work, "--teacher",
                           "owlv2", "--model", model, "--category", "office_chair",
                           "--prompt", "the {part} of an {category}", "--views", "2",
                           "--resolution", "64", "--points", "500", "--device", "cpu")
    assert code == 0, err
    workspace = Workspace.open(work)
    boxes = workspace.read_record(shape_scope("Chair_chair0"), "detect", Boxes)
    assert boxes.prompts == [f"the {p} of an office chair" for p in boxes.part_names]
    # the category is part of the key: another one asks again, the same one is cached
    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "owlv2",
                           "--model", model, "--category", "chair", "--device", "cpu")
    assert code == 0 and "detect: 4 computed" in err, err
    again = workspace.read_record(shape_scope("Chair_chair0"), "detect", Boxes)
    assert again.prompts[0] == f"a {again.part_names[0]} of a chair"
    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "owlv2",
                           "--model", model, "--category", "chair", "--device", "cpu")
    assert "detect: 0 computed, 4 cached" in err
    code, _, err = partseg(capsys, monkeypatch, "detect", work, "--teacher", "owlv2",
                           "--model", model, "--prompt", "a photo", "--device", "cpu")
    assert code == 2 and "--prompt 'a photo'" in err and len(err.strip().splitlines()) == 1
    maps_run = partseg(capsys, monkeypatch, "detect", work, "--teacher", "clipseg", "--model",
                       str(tiny_models["clipseg"]), "--device", "cpu")
    assert maps_run[0] == 0, maps_run[2]
    maps = workspace.read_record(shape_scope("Chair_chair0"), "detect", PixelMaps)
    assert maps.prompts == [f"a {p} of a chair" for p in maps.part_names]


def test_run_prints_counts_and_warns_about_empty_results(capsys, monkeypatch,
                                                         tmp_path: Path) -> None:
    data, work = tmp_path / "data", tmp_path / "ws"
    shutil.copytree(EXAMPLES, data)
    code, _, err = partseg(capsys, monkeypatch, "run", data, "--work", work, "--teacher",
                           "simulated", *SMALL)
    assert code == 0, err
    assert "  Chair_chair0: " in err and "points labelled" in err
    # a threshold no superpoint reaches labels nothing: each shape is named, and counted
    code, _, err = partseg(capsys, monkeypatch, "vote", work, "--threshold", "1.01")
    assert code == 0, err
    assert "vote: 4 computed, 0 cached; warnings: 4 shapes with no part found" in err
    assert "partseg: warning: vote: Chair_chair1: no part found: 0 of 2000 points" in err
    # a cached rerun reports them again, from the stored notes
    code, _, err = partseg(capsys, monkeypatch, "vote", work, "--threshold", "1.01")
    assert "vote: 0 computed, 4 cached; warnings: 4 shapes with no part found" in err


def test_category_gives_a_single_file_its_part_names(capsys, monkeypatch, tmp_path: Path,
                                                     tiny_models) -> None:
    import trimesh

    trimesh.creation.box(extents=(1, 2, 1)).export(tmp_path / "thing.obj")
    args = ["run", tmp_path / "thing.obj", "--work", tmp_path / "ws", "--teacher", "owlv2",
            "--model", str(tiny_models["owlv2"]), "--views", "2", "--resolution", "64",
            "--points", "500", "--device", "cpu"]
    code, _, err = partseg(capsys, monkeypatch, *args)
    # no part names: refused in one line naming the file, before anything is rendered
    assert_one_line_error(code, err, f"{tmp_path / 'thing.obj'}: no part names", "--parts",
                          "--category")
    workspace = Workspace.open(tmp_path / "ws")
    assert not workspace.exists(shape_scope("thing"), "render")
    code, _, err = partseg(capsys, monkeypatch, "distill", tmp_path / "ws", "--mode", "tta",
                           "--shape", tmp_path / "thing.obj")
    assert_one_line_error(code, err, "thing.obj: no part names", "--category chair")
    code, _, err = partseg(capsys, monkeypatch, *args, "--category", "chair")
    assert code == 0, err
    boxes = Workspace.open(tmp_path / "ws").read_record(shape_scope("thing"), "detect", Boxes)
    assert boxes.part_names == ["arm", "back", "leg", "seat", "wheel"]
    assert boxes.prompts[1] == "a back of a chair"

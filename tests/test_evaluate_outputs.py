"""`evaluate`: per-shape rows and provenance in JSON and CSV, `-` for standard output,
hints that name the stored labellings, and `--method NAME` after `distill --output NAME`."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_cli import EXAMPLES, SMALL, assert_one_line_error, partseg

from partseg_cli import evaluate
from partseg_cli.evaluate import ShapeEval


@pytest.fixture
def work(capsys, monkeypatch, tmp_path: Path) -> Path:
    data, work = tmp_path / "data", tmp_path / "ws"
    shutil.copytree(EXAMPLES, data)
    code, _, err = partseg(capsys, monkeypatch, "run", data, "--work", work, "--teacher",
                           "simulated", *SMALL)
    assert code == 0, err
    return work


def test_shape_rows_follow_the_convention() -> None:
    # part 2 is absent from both: 1 under shapenetpart, left out under partnete
    item = ShapeEval("s", "c", ["a", "b", "z"], np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    row = evaluate.shape_rows([item], "shapenetpart")[0]
    assert row["points"]["part_iou"] == {"a": 0.5, "b": 2 / 3, "z": 1.0}
    assert row["points"]["miou"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    row = evaluate.shape_rows([item], "partnete")[0]
    assert row["points"]["part_iou"]["z"] is None
    assert row["points"]["miou"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_json_and_csv_carry_shapes_and_provenance(capsys, monkeypatch, work: Path) -> None:
    code, out, err = partseg(capsys, monkeypatch, "evaluate", work, "--json", "-")
    assert code == 0, err
    report = json.loads(out)  # stdout is the JSON alone; the table went to stderr
    assert "mIoU" in err and not (work.parent / "-").exists()
    rows = {r["shape_id"]: r for r in report["shapes"]}
    assert sorted(rows) == [f"Chair_chair{i}" for i in range(4)]
    row = rows["Chair_chair0"]
    assert set(row["points"]["part_iou"]) == {"arm", "back", "leg", "seat"}
    assert row["teacher"] == "simulated:glip-like" and len(row["keys"]["vote"]) == 20
    # the mean of the per-shape mIoUs is the category mIoU (shapenetpart convention)
    mean = np.mean([r["points"]["miou"] for r in rows.values()])
    assert mean == pytest.approx(report["categories"]["Chair"]["points"]["miou"])
    prov = report["provenance"]
    assert prov["method"] == "vote" and prov["convention"] == "shapenetpart"
    assert prov["teachers"] == ["simulated:glip-like"] and prov["partseg_version"]

    code, out, err = partseg(capsys, monkeypatch, "evaluate", work, "--csv", "-")
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert list(table[0]) == ["category", "part", "domain", "value", "count", "shape"]
    mine = [r for r in table if r["shape"] == "Chair_chair0" and r["domain"] == "points"]
    assert {r["part"] for r in mine} == {"arm", "back", "leg", "seat", "(mean)"}
    means = [r for r in mine if r["part"] == "(mean)"]
    assert float(means[0]["value"]) == pytest.approx(row["points"]["miou"], abs=1e-6)
    provenance = {r["part"]: r["value"] for r in table if r["category"] == "(provenance)"}
    assert provenance["method"] == "vote"
    code, _, err = partseg(capsys, monkeypatch, "evaluate", work, "--json", "-", "--csv", "-")
    assert_one_line_error(code, err, "only one of them")


def test_method_hints_and_distill_output_names(capsys, monkeypatch, work: Path) -> None:
    code, _, err = partseg(capsys, monkeypatch, "evaluate", work, "--method", "nosuch")
    assert_one_line_error(code, err, "no labelling 'nosuch'", "stored: vote",
                          "partseg inspect")
    assert "partseg nosuch" not in err
    code, _, err = partseg(capsys, monkeypatch, "distill", work, "--output", "quick",
                           "--epochs", "2", "--no-backward", "--device", "cpu")
    assert code == 0, err
    code, out, _ = partseg(capsys, monkeypatch, "inspect", work)
    assert "distill.quick" in out
    for name in ("quick", "distill.quick"):  # the name given and the one inspect shows
        code, out, err = partseg(capsys, monkeypatch, "evaluate", work, "--method", name,
                                 "--json", "-")
        assert code == 0, err
        assert json.loads(out)["provenance"]["method"] == "distill.quick"

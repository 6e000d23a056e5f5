"""The Python API (`import partseg_cli`): shapes from arrays or files, any stage, and
one-call segmentation, with the CLI's caching and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from test_cli import EXAMPLES

import partseg_cli as ps
from partseg_cli.errors import InputError, PartsegError

SMALL = {"views": 3, "resolution": 128, "device": "cpu"}


def two_boxes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A mesh of two boxes: a seat (part 0) on a tall back (part 1)."""
    seat = trimesh.creation.box(extents=(1.0, 0.2, 1.0))
    back = trimesh.creation.box(extents=(1.0, 1.2, 0.2))
    back.apply_translation((0, 0.7, -0.4))
    mesh = trimesh.util.concatenate([seat, back])
    labels = np.repeat([0, 1], [len(seat.faces), len(back.faces)])
    return np.asarray(mesh.vertices), np.asarray(mesh.faces), labels


def test_shape_from_arrays_points_and_mesh() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 3)) * 10 + 5
    shape = ps.shape_from_arrays(points, labels=np.arange(500) % 2, part_names=["a", "b"],
                                 category="thing", shape_id="my shape")
    assert shape.shape_id == "my_shape" and shape.n_points == 500
    assert np.abs(np.linalg.norm(shape.points, axis=1).max() - 1) < 1e-5  # normalised
    assert shape.part_names == ["a", "b"] and shape.category == "thing"
    vertices, faces, labels = two_boxes()
    mesh = ps.shape_from_arrays(vertices=vertices, faces=faces, labels=labels,
                                part_names=["seat", "back"], n_points=800, seed=1)
    assert mesh.n_points == 800 and mesh.mesh is not None
    assert set(np.unique(mesh.point_labels)) == {0, 1}
    with pytest.raises(InputError, match="3 labels for 24 faces"):
        ps.shape_from_arrays(vertices=vertices, faces=faces, labels=[0, 1, 0])
    with pytest.raises(InputError, match="NaN"):
        ps.shape_from_arrays(np.full((4, 3), np.nan))


def test_segment_in_one_call_and_stages_on_a_kept_workspace(tmp_path: Path) -> None:
    vertices, faces, labels = two_boxes()
    shape = ps.shape_from_arrays(vertices=vertices, faces=faces, labels=labels,
                                 part_names=["seat", "back"], category="chair",
                                 n_points=1500)
    # the simulated teacher measures (it reads the labels): a real one needs weights
    labelling = ps.segment(shape, ["seat", "back"], teacher="simulated", **SMALL)
    assert labelling.point_labels.shape == (1500,) and labelling.part_names == ["seat", "back"]
    agree = (labelling.point_labels == shape.point_labels).mean()
    assert agree > 0.6, agree
    # a (vertices, faces) pair or a trimesh works too; no labels: the simulated teacher
    # refuses in one line
    with pytest.raises(PartsegError, match="detect"):
        ps.segment((vertices, faces), ["seat", "back"], teacher="simulated", **SMALL)
    # a kept workspace: the CLI's cache is reused, every stage can be run by name
    work = ps.open_workspace(tmp_path / "ws", create=True)
    sid = ps.add_shape(work, shape)
    reports = [ps.run_stage(work, stage, teacher="simulated", n_views=3, resolution=128)
               for stage in ("render", "detect", "superpoints", "backproject", "vote")]
    assert [r.computed for r in reports] == [[sid]] * 5
    assert ps.add_shape(work, shape) == sid  # unchanged: nothing downstream is redone
    again = ps.run_stage(work, "vote")
    assert again.skipped == [sid] and "parts found" in again.notes[sid].counts
    with pytest.raises(PartsegError, match="unknown option.*threshold"):
        ps.stage_config("render", threshold=0.3)
    with pytest.raises(PartsegError, match="unknown stage"):
        ps.run_stage(work, "nosuch")


def test_load_reads_files_and_dataset_folders() -> None:
    shapes = ps.load(EXAMPLES)
    assert len(shapes) == 4 and all(s.category == "Chair" for s in shapes)
    with pytest.raises(InputError, match="no such file"):
        ps.load(EXAMPLES / "missing.ply")

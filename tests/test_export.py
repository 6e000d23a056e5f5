"""`export`: coloured files per shape and one file per part."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import trimesh

from partseg_cli.evaluate import read_pred
from partseg_cli.export import export_shape, ground_truth_labelling
from partseg_cli.palette import colour_labels, part_palette
from partseg_cli.records import Labelling, Mesh, Normalization, Shape


def two_part_mesh_shape() -> Shape:
    box = trimesh.creation.box()
    faces = np.asarray(box.faces, np.int32)
    face_labels = (np.asarray(box.triangles_center)[:, 0] > 0).astype(np.int32)
    points, face_index = trimesh.sample.sample_surface(box, 200, seed=0)
    return Shape(
        shape_id="box", points=points.astype(np.float32), normals=np.zeros((200, 3), np.float32),
        colors=np.full((200, 3), 0.5, np.float32),
        normalization=Normalization(np.array([1.0, 2.0, 3.0]), 2.0),
        part_names=["left", "right"],
        mesh=Mesh(np.asarray(box.vertices, np.float32), faces, face_labels=face_labels),
        point_faces=face_index.astype(np.int32),
        point_labels=face_labels[face_index],
    )


def test_palette_is_distinct_and_unlabelled_is_grey() -> None:
    palette = part_palette(6)
    assert len({tuple(c) for c in palette}) == 6
    colours = colour_labels(np.array([0, -1, 1]), palette)
    assert colours.shape == (3, 4)
    assert tuple(colours[1, :3]) == (150, 150, 150)
    assert tuple(colours[2, :3]) == tuple(palette[1])


def test_export_writes_viewer_files_in_source_frame(tmp_path: Path) -> None:
    shape = two_part_mesh_shape()
    labelling = Labelling(point_labels=shape.point_labels, face_labels=shape.mesh.face_labels,
                          part_names=shape.part_names, method="vote")
    written = export_shape(shape, labelling, tmp_path / "box")
    names = sorted(p.relative_to(tmp_path / "box").as_posix() for p in written)
    assert names == ["face_labels.npy", "face_labels.txt", "labels.json", "legend.png",
                     "mesh.glb", "parts/left.glb", "parts/right.glb", "point_labels.npy",
                     "point_labels.txt", "points.ply"]
    cloud = trimesh.load(tmp_path / "box" / "points.ply")
    np.testing.assert_allclose(cloud.vertices.mean(0), shape.points.mean(0) * 2 + [1, 2, 3],
                               atol=1e-4)
    right = trimesh.load(tmp_path / "box" / "parts" / "right.glb", force="mesh")
    assert len(right.faces) == int((shape.mesh.face_labels == 1).sum())
    summary = json.loads((tmp_path / "box" / "labels.json").read_text())
    assert [p["points"] for p in summary["parts"]] == [
        int((shape.point_labels == 0).sum()), int((shape.point_labels == 1).sum())]
    assert not list((tmp_path / "box").glob(".*.tmp"))


def test_glb_has_one_named_node_per_part_with_hard_borders(tmp_path: Path) -> None:
    shape = two_part_mesh_shape()
    face_labels = shape.mesh.face_labels.copy()
    face_labels[0] = -1
    labelling = Labelling(point_labels=shape.point_labels, face_labels=face_labels,
                          part_names=shape.part_names, method="vote")
    export_shape(shape, labelling, tmp_path / "box")
    scene = trimesh.load(tmp_path / "box" / "mesh.glb")
    assert sorted(scene.graph.nodes_geometry) == ["left", "right", "unlabelled"]
    palette = part_palette(2)
    for name, geometry in scene.geometry.items():
        expected = {"left": palette[0], "right": palette[1]}.get(name, (150, 150, 150))
        assert tuple(geometry.visual.material.baseColorFactor[:3]) == tuple(expected)
    # every node has its own vertices: no vertex is shared across a part border
    assert sum(len(g.faces) for g in scene.geometry.values()) == len(face_labels)
    assert len(scene.geometry["unlabelled"].faces) == 1


def test_label_arrays_read_back_by_evaluate_pred(tmp_path: Path) -> None:
    shape = two_part_mesh_shape()
    point_labels = np.where(shape.point_labels == 0, 1, 0).astype(np.int32)  # swapped
    face_labels = 1 - shape.mesh.face_labels
    labelling = Labelling(point_labels=point_labels, face_labels=face_labels,
                          part_names=["right", "left"], method="vote")
    export_shape(shape, labelling, tmp_path / "out" / "box")
    text = np.loadtxt(tmp_path / "out" / "box" / "point_labels.txt", dtype=np.int64)
    np.testing.assert_array_equal(text, point_labels)
    back = read_pred(tmp_path / "out", shape)
    assert back.part_names == ["right", "left"]
    np.testing.assert_array_equal(back.point_labels, point_labels)
    np.testing.assert_array_equal(back.face_labels, face_labels)


def test_ground_truth_exports_like_a_prediction(tmp_path: Path) -> None:
    shape = two_part_mesh_shape()
    export_shape(shape, ground_truth_labelling(shape), tmp_path / "gt")
    summary = json.loads((tmp_path / "gt" / "labels.json").read_text())
    assert summary["method"] == "ground-truth"
    np.testing.assert_array_equal(np.load(tmp_path / "gt" / "face_labels.npy"),
                                  shape.mesh.face_labels)

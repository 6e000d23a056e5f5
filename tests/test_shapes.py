"""Shape and dataset loading: formats, dataset layouts, edge cases, real shared data."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from shared_data import shared_data

from partseg_cli.errors import InputError
from partseg_cli.shapes import (
    SHAPENETPART_OFFSETS,
    ShapeSource,
    builtin_part_names,
    discover,
    estimate_normals,
    load_shape,
    normalize,
    source_digest,
)


def write_off(path: Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    lines = ["OFF", f"{len(vertices)} {len(faces)} 0"]
    lines += [" ".join(map(str, v)) for v in vertices]
    lines += ["3 " + " ".join(map(str, f)) for f in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


# Two unit squares' worth of triangles: z=0 square (faces 0, 1) and x=0 square (2, 3).
SQUARE_V = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0],
                     [0, 0, 1], [0, 1, 1]], float)
SQUARE_F = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 5], [0, 5, 4]])


def labelled_folder(root: Path, labels: str = "seat\n1 2\nback\n3 4\n") -> Path:
    folder = root / "Chair"
    folder.mkdir(parents=True)
    write_off(folder / "c1.off", SQUARE_V, SQUARE_F)
    (folder / "c1_labels.txt").write_text(labels)
    return folder


# --- tables and normalisation ------------------------------------------------------


def test_builtin_part_names_lookup():
    assert builtin_part_names("cap") == ["panels", "peak"]
    assert builtin_part_names("CHAIR") == ["arm", "back", "leg", "seat", "wheel"]  # PartNetE
    assert builtin_part_names("chair", "shapenetpart") == ["back", "seat", "leg", "armrest"]
    assert builtin_part_names("shapenetpart:Table") == ["tabletop", "leg", "drawer"]
    assert builtin_part_names("storagefurniture") == ["door", "drawer", "handle"]
    assert builtin_part_names("spaceship") is None
    # offsets of the official table in reference-details.md
    assert list(SHAPENETPART_OFFSETS.values()) == [0, 4, 6, 8, 12, 16, 19, 22, 24, 28, 30,
                                                   36, 38, 41, 44, 47]


def test_normalize_hand_computed():
    n = normalize(np.array([[0, 0, 0], [2, 0, 0], [1, 3, 0]], float))
    np.testing.assert_allclose(n.center, [1, 1, 0])
    assert n.scale == pytest.approx(2.0)  # (1, 3, 0) - (1, 1, 0)
    np.testing.assert_allclose(n.to_source(np.array([[0, 1, 0]])), [[1, 3, 0]])


# --- meshes ----------------------------------------------------------------------------


def test_labelled_mesh_sampling_and_frame(tmp_path):
    labelled_folder(tmp_path)
    sources, problems = discover(tmp_path)
    assert problems == []
    [source] = sources
    assert (source.shape_id, source.kind, source.category) == ("Chair_c1", "labeleddb", "Chair")
    assert source.part_names == ["back", "seat"]
    shape = load_shape(source, n_points=400, seed=3)
    assert shape.points.shape == (400, 3) and shape.points.dtype == np.float32
    np.testing.assert_array_equal(shape.mesh.face_labels, [1, 1, 0, 0])
    np.testing.assert_array_equal(shape.point_labels, shape.mesh.face_labels[shape.point_faces])
    # normalised frame: centred on the mean of the points, largest norm 1
    np.testing.assert_allclose(shape.points.mean(0), 0, atol=1e-5)
    assert np.linalg.norm(shape.points, axis=1).max() == pytest.approx(1, abs=1e-5)
    # back in the source frame, faces 0-1 points lie on z=0 and faces 2-3 on x=0
    source_xyz = shape.normalization.to_source(shape.points.astype(np.float64))
    on_floor = shape.point_faces < 2
    np.testing.assert_allclose(source_xyz[on_floor, 2], 0, atol=1e-5)
    np.testing.assert_allclose(source_xyz[~on_floor, 0], 0, atol=1e-5)
    np.testing.assert_allclose(shape.normalization.to_source(shape.mesh.vertices), SQUARE_V,
                               atol=1e-5)
    # normals are face normals (winding): +z for the floor, +x for the wall
    np.testing.assert_allclose(shape.normals[on_floor], [[0, 0, 1]] * on_floor.sum(), atol=1e-6)
    np.testing.assert_allclose(shape.normals[~on_floor], [[1, 0, 0]] * (~on_floor).sum(),
                               atol=1e-6)
    # area weighting: both squares have area 1
    assert 0.4 < on_floor.mean() < 0.6
    np.testing.assert_allclose(shape.colors, 0.5)
    again = load_shape(source, n_points=400, seed=3)
    np.testing.assert_array_equal(again.points, shape.points)
    assert not np.array_equal(load_shape(source, n_points=400, seed=4).points, shape.points)


def test_vertex_colours_interpolated_barycentrically(tmp_path):
    import trimesh

    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    mesh = trimesh.Trimesh(vertices, [[0, 1, 2]], process=False,
                           vertex_colors=[[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]])
    path = tmp_path / "tri.ply"
    mesh.export(path)
    [source], _ = discover(path)
    assert source.kind == "mesh" and source.shape_id == "tri"
    shape = load_shape(source, n_points=200)
    xyz = shape.normalization.to_source(shape.points.astype(np.float64))
    # barycentric weights of (x, y) in this triangle: (1 - x - y, x, y) -> (r, g, b)
    expected = np.stack([1 - xyz[:, 0] - xyz[:, 1], xyz[:, 0], xyz[:, 1]], axis=1)
    np.testing.assert_allclose(shape.colors, expected, atol=1e-4)


@pytest.mark.parametrize("vertices, faces, problem", [
    (np.array([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]), "NaN"),
    (np.array([[0, 0, np.inf], [1, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]), "infinite"),
    (np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]]), np.array([[0, 1, 2]]), "zero area"),
    (np.zeros((0, 3)), np.zeros((0, 3), int), "no"),
])
def test_bad_meshes_raise_input_error(tmp_path, vertices, faces, problem):
    path = write_off(tmp_path / "bad.off", vertices, faces)
    with pytest.raises(InputError) as error:
        load_shape(discover(path)[0][0])
    assert error.value.path == str(path) and problem in error.value.problem


def test_corrupt_and_unsupported_files(tmp_path):
    corrupt = tmp_path / "broken.glb"
    corrupt.write_bytes(b"glTF\x02\x00\x00\x00garbage" * 3)
    with pytest.raises(InputError, match="broken.glb"):
        load_shape(discover(corrupt)[0][0])
    bad_ply = tmp_path / "broken.ply"
    bad_ply.write_bytes(b"not a ply at all")
    with pytest.raises(InputError, match="not a PLY"):
        discover(bad_ply)
    (tmp_path / "x.docx").write_text("")
    with pytest.raises(InputError, match="unsupported file type .docx"):
        discover(tmp_path / "x.docx")
    with pytest.raises(InputError, match="no such file"):
        discover(tmp_path / "missing.obj")


@pytest.mark.parametrize("labels, problem", [
    ("seat\n1 2\nback\n3\n", "labels 3 faces but c1.off has 4"),
    ("seat\n1 2\nback\n3 9\n", "face index 9 of part 'back' is out of range 1..4"),
    ("seat\n1 2\nback\n", "alternating"),
])
def test_bad_labeleddb_labels_name_the_label_file(tmp_path, labels, problem):
    folder = labelled_folder(tmp_path, labels)
    sources, _ = discover(tmp_path) if problem != "alternating" else ([], [])
    source = sources[0] if sources else ShapeSource("c1", folder / "c1.off", "labeleddb")
    with pytest.raises(InputError) as error:
        load_shape(source)
    assert error.value.path == str(folder / "c1_labels.txt")
    assert problem in error.value.problem


def test_folder_problems_and_unique_ids(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_off(tmp_path / sub / "model.off", SQUARE_V, SQUARE_F)
    (tmp_path / "a" / "notes.docx").write_text("x")
    (tmp_path / "a" / "model.mtl").write_text("")  # sidecar: not reported
    (tmp_path / "b" / "orphan_labels.txt").write_text("seat\n1\n")
    sources, problems = discover(tmp_path)
    assert sorted(s.shape_id for s in sources) == ["a_model.off", "b_model.off"]
    assert {s.category for s in sources} == {"a", "b"}
    assert sorted((Path(p).name, m) for p, m in problems) == [
        ("notes.docx", "unsupported file type .docx"),
        ("orphan_labels.txt", "label file without a matching .off mesh")]


# --- point clouds and datasets -----------------------------------------------------------


def write_ply_cloud(path: Path, points: np.ndarray, colors: np.ndarray | None = None,
                    normals: np.ndarray | None = None) -> Path:
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    if colors is not None:
        cloud.colors = o3d.utility.Vector3dVector(colors)
    if normals is not None:
        cloud.normals = o3d.utility.Vector3dVector(normals)
    assert o3d.io.write_point_cloud(str(path), cloud)
    return path


def sphere(n: int, seed: int = 0) -> np.ndarray:
    xyz = np.random.default_rng(seed).normal(size=(n, 3))
    return xyz / np.linalg.norm(xyz, axis=1, keepdims=True) * 2 + [5, 0, 0]


def test_partnete_layout(tmp_path):
    shape_dir = tmp_path / "few_shot" / "Chair" / "179"
    shape_dir.mkdir(parents=True)
    points = sphere(3000)
    colors = np.random.default_rng(1).random((3000, 3))
    write_ply_cloud(shape_dir / "pc.ply", points, colors)
    semantic = np.arange(3000) % 6 - 1  # -1..4 (5 Chair parts)
    np.save(shape_dir / "label.npy", {"semantic_seg": semantic,
                                      "instance_seg": np.arange(3000) % 3}, allow_pickle=True)
    [source], problems = discover(tmp_path)
    assert problems == []
    assert (source.shape_id, source.kind, source.category) == ("Chair_179", "partnete", "Chair")
    assert source.part_names == ["arm", "back", "leg", "seat", "wheel"]
    shape = load_shape(source)
    assert shape.mesh is None and shape.n_points == 3000
    np.testing.assert_array_equal(shape.point_labels, semantic)
    np.testing.assert_array_equal(shape.point_instances, np.arange(3000) % 3)
    np.testing.assert_allclose(shape.colors, colors, atol=1 / 255)
    np.testing.assert_allclose(shape.normalization.to_source(shape.points), points, atol=1e-5)
    # normals estimated (ply had none): unit length (zero for the few isolated random
    # points), pointing away from the centre
    length = np.linalg.norm(shape.normals, axis=1)
    assert np.all((np.abs(length - 1) < 1e-5) | (length == 0)) and (length > 0).mean() > 0.99
    assert ((shape.normals * shape.points).sum(1) > 0.9).mean() > 0.95
    # PartNetE_meta.json above the shape overrides the built-in table
    (tmp_path / "PartNetE_meta.json").write_text('{"Chair": ["a", "b", "c", "d", "e", "f"]}')
    assert discover(tmp_path)[0][0].part_names == ["a", "b", "c", "d", "e", "f"]
    # wrong label count names label.npy
    np.save(shape_dir / "label.npy", {"semantic_seg": semantic[:-1]}, allow_pickle=True)
    with pytest.raises(InputError) as error:
        load_shape(source)
    assert error.value.path == str(shape_dir / "label.npy")
    assert "2999 labels for 3000 points" in error.value.problem


def test_shapenetpart_hdf5(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "ply_data_test0.h5", "w") as handle:
        handle["data"] = rng.normal(size=(2, 64, 3)).astype(np.float32)
        handle["label"] = np.array([[4], [2]], np.uint8)  # Chair, Cap
        pid = np.stack([12 + np.arange(64) % 4, 6 + np.arange(64) % 2])  # global ids
        handle["pid"] = pid.astype(np.uint8)
    sources, problems = discover(tmp_path)
    assert problems == []
    assert [(s.shape_id, s.category, s.index) for s in sources] == [
        ("Chair_ply_data_test0_0", "Chair", 0), ("Cap_ply_data_test0_1", "Cap", 1)]
    assert sources[0].part_names == ["back", "seat", "leg", "armrest"]
    chair, cap = (load_shape(s) for s in sources)
    np.testing.assert_array_equal(chair.point_labels, np.arange(64) % 4)
    np.testing.assert_array_equal(cap.point_labels, np.arange(64) % 2)
    assert chair.n_points == 64
    assert source_digest(sources[0]) != source_digest(sources[1])


def test_shapenetpart_txt_wrong_category_id(tmp_path):
    folder = tmp_path / "02954340"
    folder.mkdir()
    (folder / "x.txt").write_text("0 0 0 0 0 1 6\n1 0 0 0 0 1 7\n0 1 0 0 0 1 12\n")
    [source], _ = discover(tmp_path)
    assert source.kind == "shapenetpart-txt" and source.category == "Cap"
    with pytest.raises(InputError, match="part id 12 is not a Cap part"):
        load_shape(source)


def test_npz_xyz_pcd_clouds(tmp_path):
    points = sphere(500)
    normals = (points - [5, 0, 0]) / 2
    np.savez(tmp_path / "cloud.npz", xyz=points, colors=np.full((500, 3), 255.0),
             labels=np.arange(500) % 2)
    np.savetxt(tmp_path / "cloud6.xyz", np.hstack([points, -normals]))
    np.savetxt(tmp_path / "cloud9.txt", np.hstack([points, normals, np.full((500, 3), 0.25)]),
               delimiter=",")
    np.save(tmp_path / "plain.npy", points.astype(np.float32))
    write_ply_cloud(tmp_path / "cloud.pcd", points, normals=normals)
    sources, problems = discover(tmp_path)
    assert problems == []
    shapes = {s.shape_id: load_shape(s) for s in sources}
    assert len(shapes) == 5  # cloud.npz and cloud.pcd share a stem: ids from their paths
    by_name = {Path(s.source).name: s for s in shapes.values()}
    npz = by_name["cloud.npz"]
    np.testing.assert_allclose(npz.colors, 1)
    np.testing.assert_array_equal(npz.point_labels, np.arange(500) % 2)
    assert npz.part_names == ["part_0", "part_1"]
    np.testing.assert_allclose(by_name["cloud6.xyz"].normals, -normals, atol=1e-5)
    np.testing.assert_allclose(by_name["cloud9.txt"].colors, 0.25)
    np.testing.assert_allclose(by_name["cloud.pcd"].normals, normals, atol=1e-5)
    for shape in shapes.values():
        np.testing.assert_allclose(shape.normalization.to_source(shape.points), points,
                                   atol=1e-4)
        assert shape.points.shape == (500, 3) and shape.normals.dtype == np.float32
    np.testing.assert_allclose(by_name["plain.npy"].colors, 0.5)


def test_estimate_normals_on_a_plane():
    grid = np.stack(np.meshgrid(np.linspace(-0.5, 0.5, 21), np.linspace(-0.5, 0.5, 21)), -1)
    points = np.column_stack([grid.reshape(-1, 2), np.full(441, 0.1)])  # spacing 0.05
    normals = estimate_normals(points)
    np.testing.assert_allclose(normals, [[0, 0, 1]] * 441, atol=1e-4)  # away from origin
    # an isolated point has no plane: zero normal
    lonely = estimate_normals(np.vstack([points, [[0.9, 0.9, 0.9]]]))
    np.testing.assert_array_equal(lonely[-1], 0)
    np.testing.assert_allclose(lonely[:-1], normals, atol=1e-4)


def test_cloud_edge_cases(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([[0, 0, 0], [np.nan, 1, 0], [1, 1, 1.0]]))
    np.save(tmp_path / "same.npy", np.ones((5, 3)))
    np.savez(tmp_path / "wrong.npz", points=np.eye(4, 3), labels=np.zeros(3))
    (tmp_path / "ragged.xyz").write_text("0 0 0\n1 1\n")
    expected = {"nan.npy": "NaN", "same.npy": "coincide", "wrong.npz": "3 labels for 4",
                "ragged.xyz": "numeric table"}
    for name, problem in expected.items():
        with pytest.raises(InputError, match=problem):
            load_shape(ShapeSource("s", tmp_path / name, "points"))


def test_source_digest(tmp_path):
    folder = labelled_folder(tmp_path / "one")
    [source], _ = discover(tmp_path / "one")
    digest = source_digest(source)
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    [moved], _ = discover(tmp_path / "two")
    assert source_digest(moved) == digest  # location does not matter
    renamed = ShapeSource(**{**source.__dict__, "part_names": ["seat", "back"]})
    assert source_digest(renamed) != digest
    (folder / "c1_labels.txt").write_text("seat\n1 2 3\nback\n4\n")
    assert source_digest(source) != digest


# --- real shared data ------------------------------------------------------------------


def test_real_labeleddb_chairs():
    folder = shared_data("labeleddb", "Chair")
    sources, problems = discover(folder)
    assert len(sources) == 20 and problems == []
    assert all(s.part_names == ["arm", "backsupport", "leg", "support"] for s in sources)
    shape = load_shape(next(s for s in sources if s.shape_id == "Chair_101"), n_points=2000)
    assert shape.mesh.faces.shape[0] == 16998  # counts from the OFF header, face order kept
    assert (shape.mesh.face_labels >= 0).all()  # every face labelled (label_check.json)
    assert set(np.unique(shape.point_labels)) == {0, 1, 2, 3}


def test_real_partnet_mobility():
    folder = shared_data("partnet-mobility", "3763")
    [source], problems = discover(folder)
    assert problems == []
    assert (source.shape_id, source.category) == ("Bottle_3763", "Bottle")
    assert source.part_names == ["body", "lid", "neck"]
    shape = load_shape(source, n_points=3000)
    assert set(np.unique(shape.mesh.face_instances)) == {5, 6, 7}  # leaf ids
    # leaf "lid" (id 7) is original-2.obj: same faces
    lid = shape.mesh.face_labels == 1
    np.testing.assert_array_equal(lid, shape.mesh.face_instances == 7)
    assert {s.shape_id for s in discover(folder.parent)[0]} == {
        "Bottle_3763", "StorageFurniture_45780", "Camera_102442", "Oven_7179",
        "Remote_100809"}


def test_real_shapenetpart_txt():
    folder = shared_data("shapenetpart")
    sources, problems = discover(folder)
    assert len(sources) == 16 and problems == []
    source = next(s for s in sources if s.shape_id == "Cap_test_000")
    shape = load_shape(source)
    raw = np.loadtxt(folder / "02954340" / "test_000.txt")
    np.testing.assert_array_equal(shape.point_labels, raw[:, 6] - 6)  # global 6, 7 -> 0, 1
    assert shape.part_names == ["panels", "peak"]
    lengths = np.linalg.norm(shape.normals, axis=1)
    assert np.all((np.abs(lengths - 1) < 1e-5) | (lengths == 0))


def test_real_sample_meshes():
    folder = shared_data("meshes")
    sources, problems = discover(folder)
    assert problems == [] and {s.kind for s in sources} == {"mesh"}
    shapes = {s.shape_id: load_shape(s, n_points=1000) for s in sources}
    assert sorted(shapes) == ["Duck", "bunny", "chair_model", "fuze", "teapot"]
    duck = shapes["Duck"].colors
    assert duck[:, 0].mean() > 0.8 and duck[:, 2].mean() < 0.3  # yellow, from the texture
    np.testing.assert_allclose(shapes["fuze"].colors, 0.5)  # its texture is missing
    for shape in shapes.values():
        assert shape.points.shape == (1000, 3) and shape.point_labels is None
        assert np.isfinite(shape.points).all()
        assert np.linalg.norm(shape.points, axis=1).max() == pytest.approx(1, abs=1e-5)


def test_pickled_label_npy_without_dict(tmp_path):
    # some PartNetE exports store the bare semantic array
    folder = tmp_path / "Bottle" / "3"
    folder.mkdir(parents=True)
    write_ply_cloud(folder / "pc.ply", sphere(50))
    with open(folder / "label.npy", "wb") as handle:
        pickle.dump(None, handle)  # not a numpy file at all
    with pytest.raises(InputError) as error:
        load_shape(discover(tmp_path)[0][0])
    assert error.value.path == str(folder / "label.npy")
    np.save(folder / "label.npy", np.zeros(50, int))
    assert load_shape(discover(tmp_path)[0][0]).part_names == ["lid"]


class _RunsCode:
    """A pickle payload whose loading would create a file (the attack of issue 13)."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


class _RunsCodeThenDict:
    """Runs code while loading and then yields a valid label dict."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (eval, (f"__import__('pathlib').Path({str(self.target)!r}).touch() or "
                       "{'semantic_seg': __import__('numpy').zeros(50, int)}",))


def _partnete_shape(tmp_path: Path) -> Path:
    folder = tmp_path / "Bottle" / "3"
    folder.mkdir(parents=True)
    write_ply_cloud(folder / "pc.ply", sphere(50))
    return folder


@pytest.mark.parametrize("payload", [_RunsCode, _RunsCodeThenDict])
def test_label_npy_never_runs_code(tmp_path, payload):
    folder = _partnete_shape(tmp_path)
    marker = tmp_path / "pwned"
    inner = np.empty((), dtype=object)
    inner[()] = payload(marker)
    np.save(folder / "label.npy", inner, allow_pickle=True)
    with pytest.raises(InputError) as error:
        load_shape(discover(tmp_path)[0][0])
    assert not marker.exists()
    assert error.value.path == str(folder / "label.npy")
    assert "refusing to load" in error.value.problem and "\n" not in str(error.value)


def test_label_npy_dict_of_plain_values_loads(tmp_path):
    folder = _partnete_shape(tmp_path)
    np.save(folder / "label.npy", {"semantic_seg": np.zeros(50, np.int64),
                                   "instance_seg": np.arange(50), "count": np.int64(50),
                                   "name": "bottle"}, allow_pickle=True)
    shape = load_shape(discover(tmp_path)[0][0])
    assert (shape.point_labels == 0).all() and shape.point_instances[-1] == 49
    # an object array nested in the dict is refused, whatever it holds
    np.save(folder / "label.npy", {"semantic_seg": np.array([None] * 50, dtype=object)},
            allow_pickle=True)
    with pytest.raises(InputError, match="not numeric arrays"):
        load_shape(discover(tmp_path)[0][0])


def test_string_and_fractional_labels_refused(tmp_path):
    folder = _partnete_shape(tmp_path)
    np.save(folder / "label.npy", np.array(["lid"] * 50))
    with pytest.raises(InputError, match="must be integers"):
        load_shape(discover(tmp_path)[0][0])
    np.save(folder / "label.npy", np.full(50, 0.5))
    with pytest.raises(InputError, match="whole numbers"):
        load_shape(discover(tmp_path)[0][0])
    np.save(folder / "label.npy", np.zeros(50))  # whole floats are fine
    assert (load_shape(discover(tmp_path)[0][0]).point_labels == 0).all()


def test_huge_or_collapsed_coordinates_refused(tmp_path):
    huge = tmp_path / "huge.xyz"
    np.savetxt(huge, sphere(50) * 1e300)
    with pytest.raises(InputError, match="too large to normalise"):
        load_shape(discover(huge)[0][0])
    mesh = write_off(tmp_path / "huge.off", np.array([[0, 0, 0], [1e300, 0, 0],
                                                     [0, 1e300, 0]], float),
                     np.array([[0, 1, 2]]))
    with pytest.raises(InputError, match="too large to normalise"):
        load_shape(discover(mesh)[0][0])
    # distinct in float64 but one point once centred and stored as float32
    flat = tmp_path / "flat.xyz"
    np.savetxt(flat, np.array([[1e20, 0, 0], [1e20, 0, 0]]))
    with pytest.raises(InputError, match="no extent"):
        load_shape(discover(flat)[0][0])

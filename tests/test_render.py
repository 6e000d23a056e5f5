"""Rendering: cameras, point splatting, mesh ray casting and the pixel -> point map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree
from shared_data import shared_data

from partseg_cli.records import Cameras, Mesh, Normalization, Shape, Views
from partseg_cli.render import (
    REFERENCE_VIEWS,
    camera_centres,
    label_images,
    project,
    reference_cameras,
    render_mesh,
    render_points,
    render_shape,
    save_pngs,
    visible_points,
)

torch.set_num_threads(1)


def front_camera(resolution: int = 64) -> Cameras:
    """One camera at +z (elevation 0, azimuth 0), distance 2.2, looking at the origin."""
    return reference_cameras(resolution=resolution, elevations=[0.0], azimuths=[0.0])


def unproject(views: Views) -> tuple[np.ndarray, np.ndarray]:
    """World positions (M, 3) of foreground pixels from depth, and their flat indices."""
    cams = views.cameras
    v, row, col = np.nonzero(views.pixel_point >= 0)
    pix = np.stack([col + 0.5, row + 0.5, np.ones_like(col, dtype=float)], -1)
    k_inv = np.linalg.inv(cams.intrinsics[v].astype(np.float64))
    cam = np.einsum("mij,mj->mi", k_inv, pix) * views.depth[v, row, col][:, None]
    rot, t = cams.extrinsics[v, :3, :3].astype(np.float64), cams.extrinsics[v, :3, 3]
    world = np.einsum("mji,mj->mi", rot, cam - t)
    return world, views.pixel_point[v, row, col]


def sphere_shape(n_points: int = 4000, subdivisions: int = 3, seed: int = 0) -> Shape:
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.8)
    points, faces = trimesh.sample.sample_surface(sphere, n_points, seed=seed)
    points = points.astype(np.float32)
    mesh = Mesh(vertices=sphere.vertices.astype(np.float32), faces=sphere.faces.astype(np.int32))
    return Shape(shape_id="sphere", points=points, normals=np.zeros_like(points),
                 colors=np.full_like(points, 0.5), mesh=mesh,
                 normalization=Normalization(center=np.zeros(3), scale=1.0),
                 point_faces=faces.astype(np.int32))


# --- cameras --------------------------------------------------------------------------


def test_reference_angles():
    cams = reference_cameras()
    assert cams.n_views == 10 and cams.width == cams.height == 800
    assert list(zip(cams.elevations, cams.azimuths, strict=True)) == REFERENCE_VIEWS
    assert REFERENCE_VIEWS[:3] == [(10.0, 0.0), (10.0, 90.0), (10.0, 180.0)]
    assert REFERENCE_VIEWS[-1] == (-20.0, 300.0)


def test_cameras_rigid_and_look_at_origin():
    cams = reference_cameras(n_views=7, resolution=100)
    rot = cams.extrinsics[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape),
                               atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-6)
    np.testing.assert_allclose(cams.extrinsics[:, 3], np.broadcast_to([0, 0, 0, 1], (7, 4)))
    np.testing.assert_allclose(np.linalg.norm(camera_centres(cams), axis=1), 2.2, atol=1e-5)
    xy, depth = project(np.zeros((1, 3), np.float32), cams)
    np.testing.assert_allclose(xy[:, 0], 50.0, atol=1e-4)  # image centre
    np.testing.assert_allclose(depth[:, 0], 2.2, atol=1e-5)
    # +y is up: a point above the origin lands on a smaller row in every view.
    xy_up, _ = project(np.array([[0.0, 0.5, 0.0]], np.float32), cams)
    assert (xy_up[:, 0, 1] < 50.0).all()
    # Spread for non-reference counts: elevations cycle 10/40/-20, azimuths even.
    assert cams.elevations[:4] == [10.0, 40.0, -20.0, 10.0]
    np.testing.assert_allclose(np.diff(cams.azimuths), 360.0 / 7)


def test_camera_axes_match_angles():
    cams = front_camera(64)
    np.testing.assert_allclose(camera_centres(cams)[0], [0, 0, 2.2], atol=1e-6)
    # Camera at +z looking at -z: world +x goes right, world +y goes up (row decreases).
    xy, _ = project(np.array([[0.5, 0, 0], [0, 0.5, 0]], np.float32), cams)
    assert xy[0, 0, 0] > 32 and abs(xy[0, 0, 1] - 32) < 1e-4
    assert xy[0, 1, 1] < 32 and abs(xy[0, 1, 0] - 32) < 1e-4
    side = reference_cameras(resolution=64, elevations=[0.0], azimuths=[90.0])
    np.testing.assert_allclose(camera_centres(side)[0], [2.2, 0, 0], atol=1e-6)
    top = reference_cameras(resolution=64, elevations=[90.0], azimuths=[0.0])
    assert np.isfinite(top.extrinsics).all()


# --- points ---------------------------------------------------------------------------


def test_point_at_origin_renders_at_centre_of_every_reference_view():
    views = render_points(np.zeros((1, 3), np.float32), np.array([[1.0, 0, 0]], np.float32),
                          reference_cameras())
    # The centre (400, 400) is the corner of four pixels; the splat (radius ~1.6 px) covers
    # exactly those four plus no pixel farther than 1.6 px from the projection.
    covered = views.pixel_point == 0
    assert covered[:, 399:401, 399:401].all()
    rows, cols = np.nonzero(covered.any(axis=0))
    assert np.all(np.hypot(rows + 0.5 - 400, cols + 0.5 - 400) <= 1.58)
    assert (views.pixel_point[~covered] == -1).all()
    np.testing.assert_allclose(views.depth[covered], 2.2, atol=1e-5)
    assert (views.rgb[covered] == [255, 0, 0]).all()
    assert (views.rgb[~covered] == 255).all()
    assert views.normals is None and views.pixel_face is None


def test_nearer_point_occludes_farther_on_same_ray():
    # Index 1 is nearer to the +z camera: it must win although its index is larger.
    points = np.array([[0, 0, -0.5], [0, 0, 0.5], [0.6, 0, -0.5]], np.float32)
    colors = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], np.float32)
    views = render_points(points, colors, front_camera(64), radius=0.05)
    centre = views.pixel_point[0, 31:33, 31:33]
    assert (centre == 1).all()
    np.testing.assert_allclose(views.depth[0, 31:33, 31:33], 1.7, atol=1e-5)
    assert (views.rgb[0, 31:33, 31:33] == [0, 255, 0]).all()
    assert not (views.pixel_point == 0).any()  # fully hidden
    assert (views.pixel_point == 2).any()  # off to the side: visible
    vis = visible_points(views, 3)
    assert vis.tolist() == [[False, True, True]]


def test_points_behind_camera_are_clipped():
    points = np.array([[0, 0, 3.0], [0, 0, 0]], np.float32)  # first is behind the camera
    views = render_points(points, np.ones((2, 3), np.float32), front_camera(32), radius=0.05)
    assert set(np.unique(views.pixel_point)) == {-1, 1}


# --- meshes ---------------------------------------------------------------------------


def test_known_triangles_pixel_face_depth_normals_and_colour():
    # Face 0: a big triangle in the plane z = 0.2 covering the centre; face 1: a triangle
    # at z = -0.2 behind it (hidden at the centre) reaching out to the left; face 2 at the
    # top right. Vertex colours: red for face 0.
    vertices = np.array([
        [-0.3, -0.3, 0.2], [0.3, -0.3, 0.2], [0.0, 0.3, 0.2],
        [-0.9, -0.2, -0.2], [0.1, -0.2, -0.2], [0.1, 0.1, -0.2],
        [0.5, 0.5, 0.0], [0.7, 0.5, 0.0], [0.7, 0.7, 0.0],
    ], np.float32)
    faces = np.arange(9, dtype=np.int32).reshape(3, 3)
    colors = np.repeat(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32), 3, axis=0)
    mesh = Mesh(vertices=vertices, faces=faces, vertex_colors=colors)
    points = vertices.reshape(3, 3, 3).mean(axis=1)  # one sample (the centroid) per face
    cams = front_camera(128)
    views = render_mesh(mesh, points, np.arange(3, dtype=np.int32), cams)
    pf = views.pixel_face[0]
    assert pf[64, 64] == 0
    np.testing.assert_allclose(views.depth[0, 64, 64], 2.0, atol=1e-5)
    np.testing.assert_allclose(views.normals[0, 64, 64], [0, 0, 1], atol=1e-3)
    assert views.rgb[0, 64, 64].tolist() == [255, 0, 0]  # headlight at normal incidence
    # Left part of face 1 (x = -0.6, y = -0.155) is not covered by face 0.
    (x, y), z = project(np.array([[-0.6, -0.155, -0.2]], np.float32), cams)[0][0, 0], 2.4
    assert pf[int(y), int(x)] == 1
    np.testing.assert_allclose(views.depth[0, int(y), int(x)], z, atol=1e-4)
    (x, y) = project(np.array([[0.65, 0.55, 0.0]], np.float32), cams)[0][0, 0]
    assert pf[int(y), int(x)] == 2
    assert pf[0, 0] == -1 and pf[127, 127] == -1
    # Background conventions and pixel -> point consistency (one sample per face here).
    bg = pf == -1
    assert (views.pixel_point[0][bg] == -1).all() and (views.depth[0][bg] == 0).all()
    assert (views.rgb[0][bg] == 255).all()
    assert (views.pixel_point[0][~bg] == pf[~bg]).all()
    without_faces = render_mesh(mesh, points, None, cams)
    assert (without_faces.pixel_point == views.pixel_point).all()


def test_mesh_pixel_point_is_on_or_next_to_the_hit():
    shape = sphere_shape()
    cams = reference_cameras(resolution=160)
    views = render_mesh(shape.mesh, shape.points, shape.point_faces, cams)
    fg = views.pixel_point >= 0
    assert (fg == (views.pixel_face >= 0)).all()
    assert 0.3 < fg.mean() < 0.6
    world, point = unproject(views)
    spacing = np.sqrt(4 * np.pi * 0.8**2 / shape.n_points)
    dist = np.linalg.norm(world - shape.points[point], axis=1)
    nearest, exact = cKDTree(shape.points).query(world)
    assert (exact == point).mean() > 0.7  # usually the true nearest sample...
    assert (dist - nearest).max() < 1.0 * spacing  # ...and never much farther
    assert np.percentile(dist - nearest, 99) < 0.5 * spacing
    # Hit faces own or neighbour the chosen point's face (shares a vertex).
    faces = shape.mesh.faces
    hit_face = views.pixel_face[fg]
    pt_face = shape.point_faces[point]
    shares = (faces[hit_face][:, :, None] == faces[pt_face][:, None, :]).any(axis=(1, 2))
    assert shares.mean() > 0.97
    # Nearly every point is seen by some view of a sphere circled by 10 cameras.
    assert visible_points(views, shape.n_points).any(axis=0).mean() > 0.95


def test_thin_sheet_pixels_map_to_their_own_side():
    # Two parallel squares 0.004 apart (a thin plate); points on both sides. The camera
    # sees the top one: pixels must map to top points although bottom ones are as close.
    top = trimesh.creation.box(extents=[1.0, 1.0, 0.004])
    points, faces = trimesh.sample.sample_surface(top, 6000, seed=1)
    mesh = Mesh(vertices=top.vertices.astype(np.float32), faces=top.faces.astype(np.int32))
    views = render_mesh(mesh, points.astype(np.float32), faces.astype(np.int32), front_camera(96))
    chosen = points[views.pixel_point[views.pixel_point >= 0]]
    assert (chosen[:, 2] > 0).mean() > 0.99


def test_render_shape_dispatches_and_labels_cover_foreground():
    shape = sphere_shape(n_points=3000, subdivisions=2)
    shape.point_labels = (shape.points[:, 1] > 0).astype(np.int32)
    cams = reference_cameras(n_views=3, resolution=96)
    as_mesh = render_shape(shape, cams)
    assert as_mesh.pixel_face is not None and as_mesh.normals.dtype == np.float16
    labels = label_images(as_mesh, shape.point_labels)
    assert labels.dtype == np.int32 and labels.shape == (3, 96, 96)
    assert ((labels >= 0) == (as_mesh.pixel_point >= 0)).all()
    shape.mesh = None
    as_points = render_shape(shape, cams)
    assert as_points.pixel_face is None and (as_points.pixel_point >= 0).any()


def test_label_images_and_visible_points_tiny():
    cams = reference_cameras(n_views=2, resolution=2)
    pixel_point = np.array([[[0, -1], [2, 2]], [[-1, -1], [3, 1]]], np.int32)
    views = Views(cameras=cams, rgb=np.zeros((2, 2, 2, 3), np.uint8),
                  depth=np.zeros((2, 2, 2), np.float32), pixel_point=pixel_point)
    labels = label_images(views, np.array([5, 1, -1, 0]))
    assert labels.tolist() == [[[5, -1], [-1, -1]], [[-1, -1], [0, 1]]]
    vis = visible_points(views, 5)
    assert vis.tolist() == [[True, False, True, False, False], [False, True, False, True, False]]


def test_save_pngs(tmp_path):
    from PIL import Image

    views = render_points(np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32),
                          reference_cameras(n_views=2, resolution=20), radius=0.1)
    paths = save_pngs(views, tmp_path / "out", "s1", point_labels=np.array([1, -1]),
                      part_names=["seat", "back"])
    assert [p.name for p in paths] == ["s1_view00.png", "s1_view00_labels.png",
                                       "s1_view01.png", "s1_view01_labels.png"]
    img = np.asarray(Image.open(paths[1]))
    assert img.shape[1] == 20 and img.shape[0] > 20  # the view, then its legend
    assert (img[0, 0] == 255).all() and not (img[10, 10] == 255).all()


# --- real data ------------------------------------------------------------------------


def load_labeleddb(path: Path) -> tuple[trimesh.Trimesh, np.ndarray]:
    mesh = trimesh.load(path, process=False, force="mesh")
    face_labels = np.full(len(mesh.faces), -1, np.int32)
    lines = path.with_name(path.stem + "_labels.txt").read_text().split("\n")
    names = [ln.strip() for ln in lines[0::2] if ln.strip()]
    for part, ids in enumerate(lines[1::2][: len(names)]):
        face_labels[np.array(ids.split(), int) - 1] = part
    return mesh, face_labels


def test_real_labeleddb_mesh():
    path = shared_data("labeleddb", "Chair", "101.off")
    tm, face_labels = load_labeleddb(path)
    vertices = np.asarray(tm.vertices, np.float64)
    points, faces = trimesh.sample.sample_surface(tm, 10000, seed=0)
    centre = points.mean(axis=0)
    scale = np.linalg.norm(points - centre, axis=1).max()
    points = ((points - centre) / scale).astype(np.float32)
    mesh = Mesh(vertices=((vertices - centre) / scale).astype(np.float32),
                faces=np.asarray(tm.faces, np.int32), face_labels=face_labels)
    point_labels = face_labels[faces]
    views = render_mesh(mesh, points, faces.astype(np.int32), reference_cameras(resolution=200))
    fg = views.pixel_point >= 0
    assert 0.05 < fg.mean() < 0.7
    labels = label_images(views, point_labels)
    assert (labels[fg] >= 0).mean() > 0.99
    # The pixel's point carries the label of the face the ray hit almost everywhere.
    assert (labels[fg] == face_labels[views.pixel_face[fg]]).mean() > 0.97
    assert visible_points(views, len(points)).any(axis=0).mean() > 0.7

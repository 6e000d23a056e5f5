"""Multi-view rendering of shapes into `Views` (RGB, depth, normals, pixel -> point map).

Cameras follow PartSLIP: perspective pinhole cameras on a sphere of radius 2.2 around
the origin of the normalised frame, looking at the origin, 60 degree field of view,
with +y of the shape frame as "up" (PartNet/ShapeNet convention). Intrinsics and
extrinsics use the OpenCV convention (x right, y down, z forward); the pixel (col, row)
covers [col, col+1) x [row, row+1), so its centre is at (col + 0.5, row + 0.5).

Two renderers produce the same record:

* `render_mesh`: Open3D ray casting (Embree), one batched `cast_rays` call for all
  views; every foreground pixel is also mapped to a sampled surface point.
* `render_points`: z-buffer splatting in torch (CPU or CUDA); every point covers the
  pixels within its projected radius and the nearest point wins each pixel.

Either way `Views.pixel_point` is the whole 2D <-> 3D correspondence used downstream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .errors import InputError, PartsegError
from .pipeline import STAGE_VERSIONS, StageReport, progress, resolve_device, run_per_shape
from .records import UNLABELLED, Cameras, Mesh, Shape, Views
from .shapes import ShapeSource, load_shape, source_digest
from .store import Workspace, content_key, shape_scope

# The reference's 10 (elevation, azimuth) pairs in degrees (PartSLIP rendering).
REFERENCE_VIEWS: list[tuple[float, float]] = [
    (10.0, 0.0), (10.0, 90.0), (10.0, 180.0), (10.0, 270.0),
    (40.0, 0.0), (40.0, 120.0), (40.0, 240.0),
    (-20.0, 60.0), (-20.0, 180.0), (-20.0, 300.0),
]
ZNEAR = 0.01  # camera-z below which geometry is clipped, as in the reference
BACKGROUND = 255  # white
MESH_GREY = 0.75  # albedo of meshes without vertex colours
AMBIENT = 0.3  # headlight shading: ambient + (1 - ambient) * |cos(normal, view ray)|
# Anisotropic nearest-point search for meshes: an offset along the hit face's normal
# counts this many times more than an in-plane offset, so a pixel on one side of a thin
# sheet (wing, seat, table top) maps to a point on that side, not the opposite one.
NORMAL_OFFSET_WEIGHT = 32.0
# Score factor for candidates sampled on the hit face itself: a mild preference that keeps
# the point's part consistent with pixel_face at part seams and on coincident faces.
SAME_FACE_BONUS = 0.8
CELL_CANDIDATES = 8  # nearest points examined per face cell
CELL_FRACTION = 0.5  # face cell size as a fraction of the mean point spacing
MAX_CELL_SPLITS = 32  # per face edge, bounds the cell table on huge faces
MAX_SPLAT_RADIUS_PX = 16  # cap for points very close to a camera
CANDIDATE_TILE = 4  # pixels per tile side when finding which rays to cast


# --- cameras --------------------------------------------------------------------------


def _look_at_extrinsics(elevations: np.ndarray, azimuths: np.ndarray,
                        distance: float) -> np.ndarray:
    """World -> camera (V, 4, 4) float64 for cameras on a sphere looking at the origin.

    Camera centre: distance * (cos e sin a, sin e, cos e cos a) (azimuth 0 looks along
    -z, azimuth 90 along -x, as pytorch3d's look_at_view_transform used by PartSLIP).
    Rows of R are the camera axes in world coordinates: x right, y down, z forward.
    """
    e, a = np.radians(elevations), np.radians(azimuths)
    centre = distance * np.stack([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)], -1)
    forward = -centre / np.linalg.norm(centre, axis=-1, keepdims=True)
    up = np.broadcast_to(np.array([0.0, 1.0, 0.0]), forward.shape).copy()
    # Straight above/below the origin +y is parallel to the view ray: use -z/+z as up
    # there, i.e. the image keeps the azimuth-0 orientation.
    polar = np.abs(forward[:, 1]) > 1.0 - 1e-9
    up[polar] = np.array([0.0, 0.0, -1.0]) * np.sign(-forward[polar, 1:2])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward], axis=1)  # (V, 3, 3)
    ext = np.zeros((len(e), 4, 4))
    ext[:, :3, :3] = rot
    ext[:, :3, 3] = -np.einsum("vij,vj->vi", rot, centre)
    ext[:, 3, 3] = 1.0
    return ext


def reference_cameras(n_views: int = 10, resolution: int = 800,
                      elevations: list[float] | None = None,
                      azimuths: list[float] | None = None, distance: float = 2.2,
                      fov_deg: float = 60.0) -> Cameras:
    """Square pinhole cameras on a sphere around the origin, looking at the origin.

    Up is +y of the (normalised) shape frame: elevation is the angle above the xz
    plane, azimuth turns about +y starting from the +z axis (camera at +z for azimuth
    0, at +x for azimuth 90). Rows of the images run along -y (OpenCV y down).

    Args:
        n_views: number of views when no angles are given. 10 gives the PartSLIP
            reference set (`REFERENCE_VIEWS`); other counts spread azimuths evenly over
            360 degrees with elevations cycling 10, 40, -20 degrees.
        resolution: image width = height, pixels.
        elevations, azimuths: explicit angles in degrees. When one list is given it
            sets the number of views (n_views is then ignored); a missing partner list
            is filled as above. Both lists must have the same length.
        distance: camera distance from the origin (normalised units).
        fov_deg: full field of view, degrees (same horizontally and vertically).

    Returns:
        Cameras with intrinsics (V, 3, 3) float32 and extrinsics (V, 4, 4) float32.
    """
    if resolution < 1 or distance <= 0 or not 0 < fov_deg < 180:
        raise ValueError(f"bad camera settings: resolution={resolution}, "
                         f"distance={distance}, fov_deg={fov_deg}")
    if elevations is None and azimuths is None:
        if n_views == len(REFERENCE_VIEWS):
            elevations = [ev for ev, _ in REFERENCE_VIEWS]
            azimuths = [az for _, az in REFERENCE_VIEWS]
        elif n_views < 1:
            raise ValueError(f"n_views must be positive, got {n_views}")
    count = len(elevations) if elevations is not None else (
        len(azimuths) if azimuths is not None else n_views)
    if elevations is None:
        elevations = [(10.0, 40.0, -20.0)[i % 3] for i in range(count)]
    if azimuths is None:
        azimuths = [360.0 * i / count for i in range(count)]
    if len(elevations) != len(azimuths) or count == 0:
        raise ValueError(f"need as many elevations as azimuths (non-empty), got "
                         f"{len(elevations)} and {len(azimuths)}")
    ext = _look_at_extrinsics(np.asarray(elevations, float), np.asarray(azimuths, float),
                              distance)
    focal = 0.5 * resolution / math.tan(math.radians(fov_deg) / 2)
    k = np.array([[focal, 0, resolution / 2], [0, focal, resolution / 2], [0, 0, 1]])
    return Cameras(
        intrinsics=np.repeat(k[None], len(elevations), axis=0).astype(np.float32),
        extrinsics=ext.astype(np.float32), width=resolution, height=resolution,
        elevations=[float(x) for x in elevations], azimuths=[float(x) for x in azimuths])


def camera_centres(cameras: Cameras) -> np.ndarray:
    """(V, 3) float32 camera centres in the world (normalised) frame: -R^T t."""
    rot, t = cameras.extrinsics[:, :3, :3], cameras.extrinsics[:, :3, 3]
    return -np.einsum("vji,vj->vi", rot, t).astype(np.float32)


def project(points: np.ndarray, cameras: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into every view.

    Args:
        points: (N, 3) float, normalised frame.
    Returns:
        xy: (V, N, 2) float32 pixel coordinates (x = column, y = row, origin at the
            top-left corner of the image), depth: (V, N) float32 camera z. Points at or
            behind the camera plane get non-finite or meaningless xy; check depth.
    """
    pts = np.asarray(points, np.float32)
    cam = np.einsum("vij,nj->vni", cameras.extrinsics[:, :3, :3], pts)
    cam += cameras.extrinsics[:, None, :3, 3]
    pix = np.einsum("vij,vnj->vni", cameras.intrinsics, cam)
    depth = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = pix[..., :2] / pix[..., 2:3]
    return xy.astype(np.float32), depth.astype(np.float32)


# --- mesh rendering -------------------------------------------------------------------


def _face_normals(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit face normals (F, 3) float32 (zero for degenerate faces) and areas (F,)."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(cross, axis=1)
    normals = np.where(norm[:, None] > 0, cross / np.maximum(norm, 1e-30)[:, None], 0.0)
    return normals.astype(np.float32), (0.5 * norm).astype(np.float32)


def _face_cell_table(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray,
                     areas: np.ndarray, points: np.ndarray,
                     point_faces: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest sampled point for every cell of a barycentric grid on every face.

    Why: a KD-tree query per foreground pixel (millions per shape) costs seconds; the
    pixel -> point map is instead looked up from a per-shape table. Face f is split into
    n_f x n_f barycentric cells (n_f ~ face size / half the point spacing, so cells are
    finer than the sampling); for each cell the point is the best of its
    `CELL_CANDIDATES` nearest points to the cell centre under an anisotropic distance
    (offsets along the face normal weigh `NORMAL_OFFSET_WEIGHT` times more; points
    sampled on f itself are preferred by `SAME_FACE_BONUS`). The cells of face f with
    i + j <= n_f - 1 (the ones meeting the triangle, u = i / n_f, v = j / n_f) are
    numbered row by row from `offset[f]`: index = offset + i n - i (i - 1) / 2 + j.

    Returns:
        n_split (F,) int64, offset (F,) int64, table (C,) int32 point index per cell.
    """
    n_pts = len(points)
    spacing = math.sqrt(max(float(areas.sum()), 1e-12) / n_pts)
    cell = CELL_FRACTION * spacing
    n_split = np.clip(np.ceil(np.sqrt(2.0 * areas) / cell), 1, MAX_CELL_SPLITS).astype(np.int64)
    # Enumerate the full n x n grid of each face, then keep cells meeting the triangle;
    # the kept ones stay in row-major order, which is the triangular numbering above.
    face_of = np.repeat(np.arange(len(faces)), n_split**2)
    start = np.cumsum(n_split**2) - n_split**2
    local = np.arange(len(face_of)) - start[face_of]
    n = n_split[face_of]
    i, j = local // n, local % n
    keep = i + j <= n - 1
    face_of, n, i, j = face_of[keep], n[keep], i[keep], j[keep]
    # Square cells: centre; the diagonal cells are half squares: their centroid.
    corner = np.where(i + j == n - 1, 1.0 / 3.0, 0.5)
    u = ((i + corner) / n).astype(np.float32)[:, None]
    v = ((j + corner) / n).astype(np.float32)[:, None]
    tri = vertices[faces[face_of]]
    centres = (1 - u - v) * tri[:, 0] + u * tri[:, 1] + v * tri[:, 2]

    k = min(CELL_CANDIDATES, n_pts)
    from scipy.spatial import cKDTree

    _, cand = cKDTree(points).query(centres, k=k, workers=-1)
    cand = cand.reshape(len(centres), k)
    offset = points[cand] - centres[:, None, :]  # (C, k, 3)
    along = np.einsum("ckd,cd->ck", offset, normals[face_of])
    score = np.einsum("ckd,ckd->ck", offset, offset) + (NORMAL_OFFSET_WEIGHT - 1) * along**2
    if point_faces is not None:
        score = np.where(point_faces[cand] == face_of[:, None], score * SAME_FACE_BONUS, score)
    table = cand[np.arange(len(cand)), score.argmin(axis=1)].astype(np.int32)
    offsets = np.cumsum(n_split * (n_split + 1) // 2) - n_split * (n_split + 1) // 2
    return n_split, offsets, table


def _candidate_pixels(vertices: np.ndarray, faces: np.ndarray, cameras: Cameras) -> np.ndarray:
    """(V, H, W) bool: pixels in a `CANDIDATE_TILE`-pixel tile that meets the projected
    bounding box of some face in front of the camera.

    Only these pixels can be hit, so only their rays are cast. The union of boxes is
    painted on the tile grid with a 2D difference array (+1/-1 at box corners, then
    cumulative sums), so the cost is O(F + tiles) whatever the face sizes.
    """
    n_v, height, width = cameras.n_views, cameras.height, cameras.width
    rows, cols = -(-height // CANDIDATE_TILE), -(-width // CANDIDATE_TILE)
    xy, depth = project(vertices, cameras)
    tri_xy, tri_z = xy[:, faces], depth[:, faces]  # (V, F, 3, 2), (V, F, 3)
    # A pixel's centre (c + 0.5) is inside [lo, hi] for c in [ceil(lo - .5), floor(hi - .5)].
    lo = np.ceil(tri_xy.min(axis=2) - 0.5)
    hi = np.floor(tri_xy.max(axis=2) - 0.5)
    ok = (lo[..., 0] <= min(hi[..., 0].max(), width - 1)) & (hi[..., 0] >= 0) \
        & (lo[..., 1] <= height - 1) & (hi[..., 1] >= 0) & (lo <= hi).all(axis=-1) \
        & (tri_z > ZNEAR).all(axis=-1)
    view = np.broadcast_to(np.arange(n_v)[:, None], ok.shape)[ok]
    size = np.array([width, height])
    lo = (np.clip(lo[ok], 0, size - 1) // CANDIDATE_TILE).astype(np.int64)
    hi = (np.clip(hi[ok], 0, size - 1) // CANDIDATE_TILE).astype(np.int64)
    stride = (rows + 1) * (cols + 1)
    base = view * stride
    idx = np.concatenate([
        base + lo[:, 1] * (cols + 1) + lo[:, 0],
        base + lo[:, 1] * (cols + 1) + hi[:, 0] + 1,
        base + (hi[:, 1] + 1) * (cols + 1) + lo[:, 0],
        base + (hi[:, 1] + 1) * (cols + 1) + hi[:, 0] + 1])
    sign = np.repeat(np.array([1, -1, -1, 1], np.int32), len(view))
    diff = np.bincount(idx, weights=sign, minlength=n_v * stride).astype(np.int32)
    diff = diff.reshape(n_v, rows + 1, cols + 1)
    tiles = diff.cumsum(axis=1).cumsum(axis=2)[:, :rows, :cols] > 0
    # A face crossing the near plane projects wrongly: cast every ray of that view.
    crossing = ((tri_z <= ZNEAR).any(axis=-1) & (tri_z > ZNEAR).any(axis=-1)).any(axis=1)
    tiles[crossing] = True
    mask = tiles.repeat(CANDIDATE_TILE, axis=1).repeat(CANDIDATE_TILE, axis=2)
    return mask[:, :height, :width]


def render_mesh(mesh: Mesh, points: np.ndarray, point_faces: np.ndarray | None,
                cameras: Cameras) -> Views:
    """Ray-cast a triangle mesh from every camera (Open3D RaycastingScene, CPU).

    Rays go through pixel centres; only pixels of 4 x 4 tiles meeting some face's
    projected bounding box are cast, all views together in one `cast_rays` call (its
    buffers take about 60 bytes per cast ray: up to ~0.4 GB for 10 views at 800 px).

    Args:
        mesh: vertices (Nv, 3) float32, faces (F, 3) int32, optional vertex colours.
        points: (N, 3) float32 points sampled on the mesh surface (Shape.points).
        point_faces: (N,) int32 face of each point, or None; used to prefer a pixel's
            own face's samples in the pixel -> point map.
        cameras: V cameras of size H x W.

    Returns:
        Views: rgb (V, H, W, 3) uint8 = albedo x (ambient + diffuse headlight), albedo
        from barycentric vertex colours (grey without them), white background;
        depth (V, H, W) float32 camera z (0 background); normals (V, H, W, 3) float16
        world face normals turned towards the camera (0 background); pixel_face
        (V, H, W) int32 (-1 background); pixel_point (V, H, W) int32 (-1 background):
        a sampled point next to the hit, from a per-face lookup table rather than a
        per-pixel search (see `_face_cell_table`; on a test sphere 3/4 of the pixels
        get the exact nearest sample and the rest one at most one point spacing
        farther), so every foreground pixel maps to a point on or next to the hit face.
    """
    import open3d as o3d

    vertices = np.ascontiguousarray(mesh.vertices, np.float32)
    faces = np.ascontiguousarray(mesh.faces, np.int64)
    points = np.ascontiguousarray(points, np.float32)
    if len(points) == 0 or len(faces) == 0:
        raise ValueError("render_mesh needs at least one face and one sampled point")
    if point_faces is not None and len(point_faces) != len(points):
        raise ValueError(f"point_faces has {len(point_faces)} entries for {len(points)} points")
    n_v, height, width = cameras.n_views, cameras.height, cameras.width
    normals, areas = _face_normals(vertices, faces)

    # Rays of candidate pixels. Direction R^T K^-1 (x, y, 1) has camera z = 1, so the
    # hit distance Open3D returns (in units of the direction length) is camera z.
    mask = _candidate_pixels(vertices, faces, cameras)
    flat = np.flatnonzero(mask)
    per_view = np.bincount(flat // (height * width), minlength=n_v)
    bounds = np.concatenate([[0], np.cumsum(per_view)])
    rays = np.empty((len(flat), 6), np.float32)
    centres = camera_centres(cameras)
    for view in range(n_v):
        pix = flat[bounds[view]:bounds[view + 1]] % (height * width)
        k_inv = np.linalg.inv(cameras.intrinsics[view].astype(np.float64))
        to_world = (cameras.extrinsics[view, :3, :3].T.astype(np.float64) @ k_inv)
        to_world = to_world.astype(np.float32)
        xs = (pix % width).astype(np.float32) + 0.5
        ys = (pix // width).astype(np.float32) + 0.5
        seg = rays[bounds[view]:bounds[view + 1]]
        seg[:, :3] = centres[view]
        seg[:, 3:] = xs[:, None] * to_world[:, 0] + ys[:, None] * to_world[:, 1] + to_world[:, 2]

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices), o3d.core.Tensor(faces.astype(np.uint32)))
    hits = scene.cast_rays(o3d.core.Tensor(rays), nthreads=0)
    t_hit = hits["t_hit"].numpy()
    hit = np.isfinite(t_hit) & (t_hit > ZNEAR)
    t_hit = t_hit[hit]
    face = hits["primitive_ids"].numpy()[hit].astype(np.int64)
    uv = hits["primitive_uvs"].numpy()[hit]
    del hits
    fg = flat[hit]
    ray_dir = rays[:, 3:][hit]
    del rays

    normal = normals[face]
    cos = np.einsum("md,md->m", normal, ray_dir)
    cos /= np.sqrt(np.einsum("md,md->m", ray_dir, ray_dir))
    normal *= -np.sign(cos)[:, None]  # face the camera
    u, v = uv[:, :1], uv[:, 1:]  # Embree: p = (1 - u - v) p0 + u p1 + v p2
    if mesh.vertex_colors is not None:
        col = np.asarray(mesh.vertex_colors, np.float32)[faces[face]]
        albedo = (1 - u - v) * col[:, 0] + u * col[:, 1] + v * col[:, 2]
    else:
        albedo = np.full((len(face), 3), MESH_GREY, np.float32)
    shade = (AMBIENT * 255) + ((1 - AMBIENT) * 255) * np.abs(cos)[:, None]
    colour = np.clip(albedo * shade + 0.5, 0, 255).astype(np.uint8)

    n_split, offsets, table = _face_cell_table(vertices, faces, normals, areas, points,
                                               point_faces)
    n = n_split[face]
    n_f = n.astype(np.float32)
    i = np.minimum((u[:, 0] * n_f).astype(np.int64), n - 1)
    j = np.clip((v[:, 0] * n_f).astype(np.int64), 0, n - 1 - i)
    point = table[offsets[face] + i * n - i * (i - 1) // 2 + j]

    total = n_v * height * width
    rgb = np.full((total, 3), BACKGROUND, np.uint8)
    rgb[fg] = colour
    depth = np.zeros(total, np.float32)
    depth[fg] = t_hit
    out_normals = np.zeros((total, 3), np.float16)
    out_normals[fg] = normal.astype(np.float16)
    pixel_face = np.full(total, -1, np.int32)
    pixel_face[fg] = face
    pixel_point = np.full(total, -1, np.int32)
    pixel_point[fg] = point
    grid = (n_v, height, width)
    return Views(cameras=cameras, rgb=rgb.reshape(*grid, 3), depth=depth.reshape(grid),
                 pixel_point=pixel_point.reshape(grid), normals=out_normals.reshape(*grid, 3),
                 pixel_face=pixel_face.reshape(grid))


# --- point rendering ------------------------------------------------------------------


def render_points(points: np.ndarray, colors: np.ndarray, cameras: Cameras,
                  radius: float = 0.005, device: str = "cpu") -> Views:
    """Z-buffer splatting of a coloured point cloud, all views at once (torch).

    Each point is a disc of world radius `radius` facing the camera: it covers the
    pixels whose centres lie within its projected radius f * radius / z (and at least
    the pixel its centre falls in, so no point vanishes at low resolution). Each pixel
    keeps the nearest point (smallest camera z, ties to the smaller index): a packed
    int64 key (float32 depth bits << 32 | point index) reduced with scatter 'amin'.
    (The reference radius 0.005 at 800 px is ~1.6 px, so clouds show gaps: that is
    how PartSLIP renders too.)

    Args:
        points: (N, 3) float32 normalised frame. colors: (N, 3) float in [0, 1].
        cameras: V cameras of size H x W. radius: world units.
        device: torch device for the splatting ("cpu", "cuda", ...).

    Returns:
        Views: rgb (V, H, W, 3) uint8 point colours on white; depth (V, H, W) float32
        camera z of the winning point (0 background); pixel_point (V, H, W) int32
        (-1 background); no normals or pixel_face.
    """
    n_v, height, width = cameras.n_views, cameras.height, cameras.width
    n_pts = len(points)
    if n_pts >= 2**31:
        raise ValueError("too many points for 32-bit point indices")
    import torch  # imported here: a cached `partseg render` should not pay for it

    dev = torch.device(device)
    pts = torch.as_tensor(np.asarray(points, np.float32), device=dev)
    rot = torch.as_tensor(cameras.extrinsics[:, :3, :3], device=dev)
    trans = torch.as_tensor(cameras.extrinsics[:, :3, 3], device=dev)
    intr = torch.as_tensor(cameras.intrinsics, device=dev)
    cam = torch.einsum("vij,nj->vni", rot, pts) + trans[:, None]  # (V, N, 3)
    z = cam[..., 2]
    front = z > ZNEAR
    safe_z = torch.where(front, z, torch.ones_like(z))
    pix = torch.einsum("vij,vnj->vni", intr, cam)
    px = pix[..., 0] / torch.where(front, pix[..., 2], torch.ones_like(z))
    py = pix[..., 1] / torch.where(front, pix[..., 2], torch.ones_like(z))
    r_px = (radius * intr[:, 0, 0, None] / safe_z).clamp(max=MAX_SPLAT_RADIUS_PX)
    reach = int(math.ceil(float(r_px[front].max()))) if bool(front.any()) else 0

    # Keep only points that can touch the image, then flatten (view, point) pairs.
    inside = front & (px > -reach - 1) & (px < width + reach + 1) \
        & (py > -reach - 1) & (py < height + reach + 1)
    view_idx, point_idx = torch.nonzero(inside, as_tuple=True)
    px, py, r2 = px[inside], py[inside], r_px[inside] ** 2
    col0, row0 = torch.floor(px).long(), torch.floor(py).long()
    depth_bits = z[inside].contiguous().view(torch.int32).long()  # monotone for z > 0
    key = (depth_bits << 32) | point_idx
    base = view_idx * (height * width)

    empty = torch.iinfo(torch.int64).max
    zbuf = torch.full((n_v * height * width,), empty, dtype=torch.int64, device=dev)
    # One pass per kernel offset (at most (2 reach + 1)^2, 25 at the reference
    # settings) keeps memory at O(V N) instead of O(V N kernel).
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            col, row = col0 + dx, row0 + dy
            dist2 = (col.float() + 0.5 - px) ** 2 + (row.float() + 0.5 - py) ** 2
            ok = (col >= 0) & (col < width) & (row >= 0) & (row < height)
            if dx or dy:
                ok &= dist2 <= r2
            zbuf.scatter_reduce_(0, (base + row * width + col)[ok], key[ok], reduce="amin")

    # Decode only the foreground entries; full-image work is limited to the fills.
    fg = torch.nonzero(zbuf != empty).squeeze(1)
    win = zbuf[fg]
    winner = (win & 0xFFFFFFFF).int()
    total = n_v * height * width
    pixel_point = torch.full((total,), -1, dtype=torch.int32, device=dev)
    pixel_point[fg] = winner
    depth = torch.zeros(total, dtype=torch.float32, device=dev)
    depth[fg] = (win >> 32).int().view(torch.float32)
    rgb8 = torch.as_tensor(
        np.clip(np.asarray(colors, np.float32) * 255 + 0.5, 0, 255).astype(np.uint8), device=dev)
    rgb = torch.full((total, 3), BACKGROUND, dtype=torch.uint8, device=dev)
    rgb[fg] = rgb8[winner.long()]
    grid = (n_v, height, width)
    return Views(cameras=cameras, rgb=rgb.reshape(*grid, 3).cpu().numpy(),
                 depth=depth.reshape(grid).cpu().numpy(),
                 pixel_point=pixel_point.reshape(grid).cpu().numpy())


def render_shape(shape: Shape, cameras: Cameras, device: str = "cpu") -> Views:
    """Render a shape: its mesh when it has one (ray casting, CPU), else its points.

    `device` applies to point splatting only; Open3D ray casting runs on the CPU.
    """
    if shape.n_points == 0:
        raise InputError(shape.source or shape.shape_id, "the shape has no points to render")
    if shape.mesh is not None and len(shape.mesh.faces):
        return render_mesh(shape.mesh, shape.points, shape.point_faces, cameras)
    return render_points(shape.points, shape.colors, cameras, device=device)


# --- uses of the pixel -> point map ---------------------------------------------------


def label_images(views: Views, point_labels: np.ndarray,
                 face_labels: np.ndarray | None = None) -> np.ndarray:
    """(V, H, W) int32 label of each pixel; -1 on background / unlabelled.

    point_labels: (N,) int part index per point (-1 unlabelled). face_labels: (F,) per
    mesh face; when given and the views are of a mesh, each pixel takes the label of the
    face it shows (sharp part borders), otherwise that of its point.
    """
    if face_labels is not None and views.pixel_face is not None:
        index, labels = views.pixel_face, np.asarray(face_labels, np.int32)
    else:
        index, labels = views.pixel_point, np.asarray(point_labels, np.int32)
    return np.where(index >= 0, labels[np.maximum(index, 0)], UNLABELLED).astype(np.int32)


def visible_points(views: Views, n_points: int) -> np.ndarray:
    """(V, N) bool: point n covers at least one pixel of view v."""
    n_v = views.n_views
    flat = views.pixel_point.reshape(n_v, -1)
    view, pix = np.nonzero(flat >= 0)
    visible = np.zeros((n_v, n_points), bool)
    visible[view, flat[view, pix]] = True
    return visible


def save_pngs(views: Views, out_dir: Path, prefix: str,
              point_labels: np.ndarray | None = None, part_names: list[str] | None = None,
              face_labels: np.ndarray | None = None) -> list[Path]:
    """Write `<prefix>_view<v>.png` (RGB) per view and, with labels, `..._labels.png`.

    Label images colour each part with `palette.part_palette` and carry a legend of
    ``part_names`` below the view; foreground pixels whose point is unlabelled are grey,
    background white. Returns the written paths in view order.
    """
    from PIL import Image

    from .palette import label_image, legend, part_entries, part_palette

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    label_img = (None if point_labels is None
                 else label_images(views, point_labels, face_labels))
    if label_img is not None:
        names = list(part_names or [])
        names += [f"part {i}" for i in range(len(names), int(label_img.max()) + 1)]
        palette = part_palette(max(len(names), 1))
        key = legend(part_entries(names, palette), views.cameras.width)
    for view in range(views.n_views):
        path = out_dir / f"{prefix}_view{view:02d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(views.rgb[view]).save(tmp, format="PNG")
        paths.append(path)
        if label_img is not None:
            img = Image.fromarray(label_image(label_img[view], views.pixel_point[view] >= 0,
                                              palette))
            sheet = Image.new("RGB", (img.width, img.height + key.height), (255, 255, 255))
            sheet.paste(img, (0, 0))
            sheet.paste(key, (0, img.height))
            path = out_dir / f"{prefix}_view{view:02d}_labels.png"
            with atomic_path(path) as tmp:
                sheet.save(tmp, format="PNG")
            paths.append(path)
    return paths


# --- the `render` stage -------------------------------------------------------------


@dataclass
class RenderConfig:
    """Options of `partseg render` (see its --help)."""

    n_views: int = 10
    resolution: int = 800
    elevations: list[float] | None = None
    azimuths: list[float] | None = None
    n_points: int = 10000
    point_radius: float = 0.005
    seed: int = 0
    device: str = "auto"  # resolved only when a point cloud is splatted
    png_dir: Path | None = None

    def camera_params(self) -> dict[str, Any]:
        return {"n_views": self.n_views, "resolution": self.resolution,
                "elevations": self.elevations, "azimuths": self.azimuths,
                "point_radius": self.point_radius}


def ingest(workspace: Workspace, sources: list[ShapeSource], n_points: int, seed: int,
           force: bool = False) -> StageReport:
    """Load each source into the workspace's "shape" stage, keyed by its files' bytes."""
    report = StageReport("shape")
    for source in progress(sources, desc="load"):
        scope = shape_scope(source.shape_id)
        try:
            params = {"n_points": n_points, "seed": seed, "digest": source_digest(source)}
            key = content_key("shape", STAGE_VERSIONS["shape"], params, [])
            if not force and workspace.cached_key(scope, "shape") == key:
                report.skipped.append(source.shape_id)
                continue
            shape = load_shape(source, n_points=n_points, seed=seed)
            workspace.write(scope, "shape", shape, key=key, params=params)
            report.computed.append(source.shape_id)
        except PartsegError as exc:
            report.failed[source.shape_id] = str(exc)
    return report


def run(workspace: Workspace, shape_ids: list[str], config: RenderConfig,
        force: bool = False) -> StageReport:
    """Render every shape (skipping those already rendered with these settings)."""
    cameras = reference_cameras(config.n_views, config.resolution, config.elevations,
                                config.azimuths)

    def compute(shape_id: str) -> Views:
        shape = workspace.read_record(shape_scope(shape_id), "shape", Shape)
        if shape.mesh is not None:
            return render_mesh(shape.mesh, shape.points, shape.point_faces, cameras)
        return render_points(shape.points, shape.colors, cameras, config.point_radius,
                             resolve_device(config.device))

    report = run_per_shape(workspace, "render", shape_ids, config.camera_params(), ["shape"],
                           compute, force)
    if config.png_dir is not None:
        for shape_id in progress(shape_ids, desc="png"):
            if shape_id in report.failed:
                continue
            scope = shape_scope(shape_id)
            shape = workspace.read_record(scope, "shape", Shape)
            views = workspace.read_record(scope, "render", Views)
            face_labels = shape.mesh.face_labels if shape.mesh is not None else None
            save_pngs(views, Path(config.png_dir), shape_id, shape.point_labels,
                      shape.part_names, face_labels)
    return report

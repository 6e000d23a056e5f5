"""Rendering speed: `python bench/bench_render.py`.

Prints seconds per shape (best of a few runs after a warm-up call, wall and process CPU)
for a 10k-point cloud and a ~20k-face mesh, 10 views at 800 x 800, then how the time
scales with the number of views and the resolution. The machine is shared, so the best
run is the figure that reflects the code rather than the neighbours' load.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partseg_cli.records import Mesh  # noqa: E402
from partseg_cli.render import reference_cameras, render_mesh, render_points  # noqa: E402

LABELEDDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "labeleddb"
REPEATS = 3


def best_of(fn, repeats: int = REPEATS) -> tuple[float, float]:
    """(best wall seconds, process CPU seconds of that run) after one warm-up call."""
    fn()
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(runs)


def normalised(points: np.ndarray, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = points.mean(axis=0)
    scale = np.linalg.norm(points - centre, axis=1).max()
    return ((points - centre) / scale).astype(np.float32), ((vertices - centre) / scale)


def load_mesh() -> tuple[str, Mesh, np.ndarray, np.ndarray]:
    """A ~20k-face LabeledDB chair (or an icosphere when the data is absent), 10k samples."""
    path = LABELEDDB / "Chair" / "115.off"  # 20086 faces
    tm = (trimesh.load(path, process=False, force="mesh") if path.exists()
          else trimesh.creation.icosphere(subdivisions=5))
    points, faces = trimesh.sample.sample_surface(tm, 10000, seed=0)
    points, vertices = normalised(points, np.asarray(tm.vertices))
    mesh = Mesh(vertices=vertices.astype(np.float32), faces=np.asarray(tm.faces, np.int32))
    name = str(path) if path.exists() else "icosphere"
    return name, mesh, points, faces.astype(np.int32)


def main() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    name, mesh, mesh_points, point_faces = load_mesh()
    sphere = trimesh.creation.icosphere(subdivisions=5)
    sphere_points, sphere_faces = trimesh.sample.sample_surface(sphere, 10000, seed=0)
    sphere_mesh = Mesh(vertices=(0.95 * sphere.vertices).astype(np.float32),
                       faces=sphere.faces.astype(np.int32))
    sphere_points = (0.95 * sphere_points).astype(np.float32)
    rng = np.random.default_rng(0)
    colors = rng.random((len(mesh_points), 3)).astype(np.float32)
    print(f"threads: torch {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f}")

    def mesh_case(m, pts, pf, cams):
        return lambda: render_mesh(m, pts, pf, cams)

    def point_case(cams):
        return lambda: render_points(mesh_points, colors, cams)

    cams = reference_cameras()
    cases = [
        ("points  10k pts, 10 views, 800px", point_case(cams)),
        (f"mesh    {len(mesh.faces)} faces ({Path(name).stem}), 10 views, 800px",
         mesh_case(mesh, mesh_points, point_faces, cams)),
        (f"mesh    {len(sphere_mesh.faces)} faces (icosphere r=0.95, worst case fill), "
         f"10 views, 800px", mesh_case(sphere_mesh, sphere_points, sphere_faces, cams)),
    ]
    print("\n== 10 views at 800x800, seconds per shape (best of 3 / CPU seconds) ==")
    for label, fn in cases:
        wall, cpu = best_of(fn)
        print(f"{label:70s} {wall:6.3f} s  (cpu {cpu:5.2f} s)")

    print("\n== scaling with views (800px) ==")
    for n_views in (5, 10, 20):
        c = reference_cameras(n_views=n_views)
        (wall_p, cpu_p), (wall_m, cpu_m) = best_of(point_case(c)), best_of(
            mesh_case(mesh, mesh_points, point_faces, c))
        print(f"{n_views:3d} views: points {wall_p:6.3f} s (cpu {cpu_p:5.2f})   "
              f"mesh {wall_m:6.3f} s (cpu {cpu_m:5.2f})")

    print("\n== scaling with resolution (10 views) ==")
    for res in (400, 800, 1200):
        c = reference_cameras(resolution=res)
        (wall_p, cpu_p), (wall_m, cpu_m) = best_of(point_case(c)), best_of(
            mesh_case(mesh, mesh_points, point_faces, c))
        print(f"{res:5d} px: points {wall_p:6.3f} s (cpu {cpu_p:5.2f})   "
              f"mesh {wall_m:6.3f} s (cpu {cpu_m:5.2f})")


if __name__ == "__main__":
    main()

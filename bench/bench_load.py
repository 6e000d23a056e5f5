"""Loading speed: a 300k-point binary PLY cloud (target <= 0.5 s) and a LabeledDB chair.

Run: python bench/bench_load.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import open3d as o3d

from partseg_cli.shapes import discover, load_shape

N_POINTS = 300_000
CHAIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "labeleddb" / "Chair" / "101.off"


def best_of(fn, repeats: int = 3) -> float:
    """Fastest of a few runs, in seconds (the machine is shared: the minimum is the
    least disturbed figure)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def write_cloud(path: Path, normals: bool) -> None:
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(N_POINTS, 3))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    cloud.colors = o3d.utility.Vector3dVector(rng.random((N_POINTS, 3)))
    if normals:
        cloud.normals = o3d.utility.Vector3dVector(xyz / np.linalg.norm(xyz, axis=1)[:, None])
    o3d.io.write_point_cloud(str(path), cloud, write_ascii=False)


def main() -> None:
    load_shape(discover(CHAIR)[0][0], n_points=100) if CHAIR.exists() else None  # warm imports
    with tempfile.TemporaryDirectory() as tmp:
        for normals in (True, False):
            path = Path(tmp) / f"cloud_{'n' if normals else 'nonormals'}.ply"
            write_cloud(path, normals)
            [source], _ = discover(path)
            seconds = best_of(lambda s=source: load_shape(s))
            mb = path.stat().st_size / 2**20
            what = "xyz+rgb+normals" if normals else "xyz+rgb, normals estimated"
            target = "  (target <= 0.5 s)" if normals else ""
            print(f"binary PLY, {N_POINTS:,} points, {what} ({mb:.1f} MB): "
                  f"{seconds:.3f} s{target}")
    if CHAIR.exists():
        [source] = discover(CHAIR)[0]
        for n in (10_000, 100_000):
            seconds = best_of(lambda n=n: load_shape(source, n_points=n))
            print(f"LabeledDB {source.shape_id} (16,998 faces, labels) -> {n:,} points: "
                  f"{seconds:.3f} s")
        folder = CHAIR.parent
        start = time.perf_counter()
        sources, _ = discover(folder)
        print(f"discover {folder} ({len(sources)} shapes): "
              f"{time.perf_counter() - start:.3f} s")
    else:
        print(f"{CHAIR} not found: chair timing skipped")


if __name__ == "__main__":
    main()

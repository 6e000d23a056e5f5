"""Superpoint speed, count and purity on shared shapes.

Run: python bench/bench_superpoints.py [--shapes-per-category 2] [--repeats 3]

Purity = fraction of points whose superpoint's majority ground-truth label equals
their own label (1.0 = no superpoint straddles a part boundary). Time is the wall
clock of `compute_superpoints` per shape (best of --repeats), with and without
Open3D normal estimation, after one warm-up call (the first call pays Open3D's
import, about 1 s).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partseg_cli.superpoints import compute_superpoints, estimate_normals  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
N_POINTS = 10_000


def purity(superpoints: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of points whose superpoint majority label equals their label."""
    _, gt = np.unique(labels, return_inverse=True)
    table = np.zeros((superpoints.max() + 1, gt.max() + 1), dtype=np.int64)
    np.add.at(table, (superpoints, gt), 1)
    return float(table.max(axis=1).sum() / labels.size)


def unit_sphere(points: np.ndarray) -> np.ndarray:
    """PartSLIP normalisation: centred on the mean point, largest norm 1."""
    centred = points - points.mean(axis=0)
    return centred / np.linalg.norm(centred, axis=1).max()


def labeleddb_shape(off: Path, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10k surface samples of a LabeledDB mesh: points, face normals, per-point labels."""
    mesh = trimesh.load(off, process=False, force="mesh")
    face_label = np.full(len(mesh.faces), -1, dtype=np.int64)
    lines = (off.parent / f"{off.stem}_labels.txt").read_text().split("\n")
    lines = [line.strip() for line in lines if line.strip()]
    for part, (_, faces) in enumerate(zip(lines[0::2], lines[1::2], strict=True)):
        face_label[np.array(faces.split(), dtype=np.int64) - 1] = part
    points, faces = trimesh.sample.sample_surface(mesh, N_POINTS, seed=seed)
    return unit_sphere(points), mesh.face_normals[faces], face_label[faces]


def shapes(per_category: int):
    """Yield (name, points, colors, normals or None, labels)."""
    grey = np.full((N_POINTS, 3), 0.5)
    for category in ["Airplane", "Chair", "Cup", "Table"]:
        offs = sorted((DATA / "labeleddb" / category).glob("*.off"))[:per_category]
        for off in offs:
            points, normals, labels = labeleddb_shape(off, seed=0)
            yield f"labeleddb/{category}/{off.stem}", points, grey, normals, labels
    for pid in ["3763", "45780", "7179"]:
        folder = DATA / "partnet-mobility" / pid / "point_sample"
        table = np.loadtxt(folder / "sample-points-all-pts-nor-rgba-10000.txt")
        labels = np.loadtxt(folder / "sample-points-all-label-10000.txt").astype(np.int64)
        colors = table[:, 6:9] / (255.0 if table[:, 6:9].max() > 1 else 1.0)
        yield f"partnet-mobility/{pid}", unit_sphere(table[:, :3]), colors, table[:, 3:6], labels
    for txt in sorted((DATA / "shapenetpart" / "02954340").glob("*.txt"))[:per_category]:
        table = np.loadtxt(txt)
        grey_n = np.full((len(table), 3), 0.5)
        yield f"shapenetpart/{txt.stem}", table[:, :3], grey_n, table[:, 3:6], table[:, 6]


def best_time(fn, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes-per-category", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is missing")

    estimate_normals(np.random.default_rng(0).random((100, 3)))  # warm-up: Open3D import
    header = f"{'shape':34s} {'N':>6s} {'K(o3d)':>6s} {'pur(o3d)':>8s} {'s(o3d)':>7s}"
    header += f" {'K(giv)':>6s} {'pur(giv)':>8s} {'s(giv)':>7s}"
    print(header)
    rows = []
    for name, points, colors, normals, labels in shapes(args.shapes_per_category):
        t_est, sp_est = best_time(
            lambda p=points, c=colors: compute_superpoints(p, c), args.repeats
        )
        t_giv, sp_giv = best_time(
            lambda p=points, c=colors, n=normals: compute_superpoints(p, c, n), args.repeats
        )
        row = (len(points), sp_est.max() + 1, purity(sp_est, labels), t_est)
        row += (sp_giv.max() + 1, purity(sp_giv, labels), t_giv)
        rows.append(row)
        print(f"{name:34s} {row[0]:6d} {row[1]:6d} {row[2]:8.4f} {row[3]:7.3f}", end="")
        print(f" {row[4]:6d} {row[5]:8.4f} {row[6]:7.3f}")
    table = np.array(rows, dtype=np.float64)
    per10k = table[:, [3, 6]] / table[:, [0]] * N_POINTS
    print(
        f"mean: K(o3d) {table[:, 1].mean():.1f}, purity(o3d) {table[:, 2].mean():.4f}, "
        f"K(given) {table[:, 4].mean():.1f}, purity(given) {table[:, 5].mean():.4f}"
    )
    print(
        f"seconds per 10k points: o3d normals max {per10k[:, 0].max():.3f} "
        f"mean {per10k[:, 0].mean():.3f}; given normals max {per10k[:, 1].max():.3f} "
        f"mean {per10k[:, 1].mean():.3f}"
    )


if __name__ == "__main__":
    main()

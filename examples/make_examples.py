"""Generate the bundled example shapes (ours, MIT-licensed like the rest of partseg).

Toy chairs built from boxes, written in the LabeledDB/PSB layout that partseg reads:
``toy_chairs/Chair/<id>.off`` plus ``<id>_labels.txt`` (a part name line, then a line of
1-based face indices). Run ``python examples/make_examples.py`` to regenerate them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

PARTS = ("back", "seat", "leg", "arm")


def toy_chair(rng: np.random.Generator) -> tuple[trimesh.Trimesh, np.ndarray]:
    """A chair from boxes with random proportions; returns the mesh and face part ids."""
    width, depth = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.1)
    seat_h, seat_t = rng.uniform(0.8, 1.1), rng.uniform(0.08, 0.15)
    back_h, leg_t = rng.uniform(0.8, 1.3), rng.uniform(0.06, 0.12)
    pieces: list[tuple[str, tuple[float, float, float], tuple[float, float, float]]] = [
        ("seat", (width, seat_t, depth), (0, seat_h, 0)),
        ("back", (width, back_h, seat_t), (0, seat_h + back_h / 2, -depth / 2 + seat_t / 2)),
    ]
    for sx in (-1, 1):
        for sz in (-1, 1):
            corner = (sx * (width / 2 - leg_t / 2), seat_h / 2, sz * (depth / 2 - leg_t / 2))
            pieces.append(("leg", (leg_t, seat_h, leg_t), corner))
    if rng.random() < 0.7:
        for sx in (-1, 1):
            pieces.append(("arm", (leg_t, 0.08, depth * 0.8), (sx * width / 2, seat_h + 0.3, 0)))
    meshes, labels = [], []
    for name, extents, centre in pieces:
        box = trimesh.creation.box(extents=extents)
        box = box.subdivide().subdivide()  # denser faces: closer to real scanned meshes
        box.apply_translation(centre)
        meshes.append(box)
        labels.append(np.full(len(box.faces), PARTS.index(name)))
    return trimesh.util.concatenate(meshes), np.concatenate(labels)


def write_labeleddb(mesh: trimesh.Trimesh, labels: np.ndarray, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    mesh.export(folder / f"{name}.off")
    lines = []
    for part, part_name in enumerate(PARTS):
        faces = np.flatnonzero(labels == part) + 1
        if faces.size:
            lines += [part_name, " ".join(map(str, faces))]
    (folder / f"{name}_labels.txt").write_text("\n".join(lines) + "\n")


def main() -> None:
    rng = np.random.default_rng(7)
    out = Path(__file__).parent / "toy_chairs" / "Chair"
    for index in range(4):
        mesh, labels = toy_chair(rng)
        write_labeleddb(mesh, labels, out, f"chair{index}")
    print(f"wrote 4 toy chairs to {out}")


if __name__ == "__main__":
    main()

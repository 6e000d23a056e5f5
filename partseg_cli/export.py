"""`partseg export`: segmentations as files people open in a viewer.

Per shape, under ``OUT/<shape_id>/``:
- ``points.ply``: the points coloured by part (unlabelled points grey);
- ``mesh.glb``: the mesh with faces coloured by part (meshes only);
- ``parts/<part>.ply`` (or ``.glb`` for meshes): one file per predicted part;
- ``labels.json``: part names, colours and per-part point/face counts.
Coordinates are in the shape's source frame (normalisation undone).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .records import Labelling, Shape

GREY = np.array([150, 150, 150], np.uint8)


def part_palette(n_parts: int) -> np.ndarray:
    """(n_parts, 3) uint8 well-separated colours (golden-ratio hues)."""
    import colorsys

    hues = (np.arange(n_parts) * 0.618033988749895) % 1.0
    rgb = np.array([colorsys.hsv_to_rgb(h, 0.75, 0.95) for h in hues]).reshape(-1, 3)
    return (rgb * 255).astype(np.uint8)


def colour_labels(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(N, 4) RGBA uint8 per label; -1 (unlabelled) is grey."""
    rgb = np.where((labels >= 0)[:, None], palette[np.maximum(labels, 0)], GREY)
    return np.concatenate([rgb, np.full((len(labels), 1), 255, np.uint8)], axis=1)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "part"


def export_shape(shape: Shape, labelling: Labelling, out_dir: Path) -> list[Path]:
    """Write one shape's segmentation; returns the files written."""
    import trimesh

    out_dir.mkdir(parents=True, exist_ok=True)
    names = labelling.part_names or shape.part_names
    palette = part_palette(max(1, len(names)))
    points = shape.normalization.to_source(shape.points.astype(np.float64))
    written: list[Path] = []

    cloud = trimesh.PointCloud(points, colors=colour_labels(labelling.point_labels, palette))
    written.append(_export(cloud, out_dir / "points.ply"))
    parts_dir = out_dir / "parts"
    parts_dir.mkdir(exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    face_labels = labelling.face_labels if shape.mesh is not None else None
    if shape.mesh is not None and face_labels is not None:
        vertices = shape.normalization.to_source(shape.mesh.vertices.astype(np.float64))
        mesh = trimesh.Trimesh(vertices, shape.mesh.faces, process=False)
        mesh.visual.face_colors = colour_labels(face_labels, palette)
        written.append(_export(mesh, out_dir / "mesh.glb"))
    for part, name in enumerate(names):
        point_mask = labelling.point_labels == part
        counts[name] = {"points": int(point_mask.sum())}
        if face_labels is not None:
            face_mask = face_labels == part
            counts[name]["faces"] = int(face_mask.sum())
            if face_mask.any():
                piece = mesh.submesh([np.flatnonzero(face_mask)], append=True)
                written.append(_export(piece, parts_dir / f"{_safe_name(name)}.glb"))
        elif point_mask.any():
            piece = trimesh.PointCloud(points[point_mask],
                                       colors=colour_labels(labelling.point_labels[point_mask],
                                                            palette))
            written.append(_export(piece, parts_dir / f"{_safe_name(name)}.ply"))
    summary = {"shape_id": shape.shape_id, "method": labelling.method,
               "parts": [{"name": n, "color": palette[i].tolist(), **counts[n]}
                         for i, n in enumerate(names)],
               "unlabelled_points": int((labelling.point_labels < 0).sum())}
    (out_dir / "labels.json").write_text(json.dumps(summary, indent=1))
    written.append(out_dir / "labels.json")
    return written


def _export(geometry: object, path: Path) -> Path:
    """Write via a temporary name so a killed export leaves no truncated file."""
    tmp = path.with_name(f".{path.name}.tmp")
    geometry.export(tmp, file_type=path.suffix[1:])
    tmp.replace(path)
    return path

"""`partseg export`: segmentations as files people open in a viewer or a script.

Per shape, under ``OUT/<shape_id>/``:
- ``points.ply``: the points coloured by part (unlabelled points grey);
- ``mesh.glb`` (meshes only): one named node per part (``seat``, ``leg``, ...; faces
  without a part under ``unlabelled``), each with its own vertices and a material of the
  part's colour, so part borders stay sharp in any viewer;
- ``parts/<part>.ply`` (or ``.glb`` for meshes): one file per predicted part;
- ``point_labels.npy`` / ``.txt`` and, for meshes, ``face_labels.npy`` / ``.txt``: one
  integer per point / face indexing ``labels.json``'s parts (-1 unlabelled); `partseg
  evaluate --pred OUT` reads them back;
- ``labels.json``: part names, colours and per-part point/face counts;
- ``legend.png``: each part's colour and name.
``--ground-truth`` writes the reference labelling the same way under
``OUT/<shape_id>/ground-truth/``. Coordinates are in the shape's source frame
(normalisation undone). Colours come from `palette.part_palette`, as in the pictures.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_text
from .errors import InputError, PartsegError, first_line
from .palette import GREY, colour_labels, legend, part_entries, part_palette
from .records import Labelling, Shape

GROUND_TRUTH = "ground-truth"  # sub-folder (and method name) of an exported reference
UNLABELLED_NODE = "unlabelled"
LABEL_FILES = ("point_labels", "face_labels")


def safe_name(name: str) -> str:
    """A file-name-safe version of a part name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "part"


def ground_truth_labelling(shape: Shape) -> Labelling:
    """The shape's reference labelling as a Labelling (for export and pictures)."""
    if shape.point_labels is None:
        raise PartsegError(f"shape {shape.shape_id}: has no ground-truth labels to export")
    face_labels = shape.mesh.face_labels if shape.mesh is not None else None
    return Labelling(point_labels=np.asarray(shape.point_labels, np.int32),
                     face_labels=face_labels, part_names=list(shape.part_names),
                     method=GROUND_TRUTH)


def export_shape(shape: Shape, labelling: Labelling, out_dir: Path) -> list[Path]:
    """Write one shape's segmentation; returns the files written."""
    import trimesh

    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(labelling.part_names or shape.part_names)
    palette = part_palette(max(1, len(names)))
    points = shape.normalization.to_source(shape.points.astype(np.float64))
    point_labels = np.asarray(labelling.point_labels, np.int64)
    written: list[Path] = []

    cloud = trimesh.PointCloud(points, colors=colour_labels(point_labels, palette))
    written.append(_export(cloud, out_dir / "points.ply"))
    written += _write_labels(out_dir / "point_labels", point_labels)
    parts_dir = out_dir / "parts"
    parts_dir.mkdir(exist_ok=True)
    counts: dict[str, dict[str, int]] = {n: {"points": int((point_labels == i).sum())}
                                         for i, n in enumerate(names)}
    face_labels = labelling.face_labels if shape.mesh is not None else None
    if face_labels is not None:
        face_labels = np.asarray(face_labels, np.int64)
        vertices = shape.normalization.to_source(shape.mesh.vertices.astype(np.float64))
        mesh = trimesh.Trimesh(vertices, shape.mesh.faces, process=False)
        scene = trimesh.Scene()
        for part in [*range(len(names)), -1]:
            faces = np.flatnonzero(face_labels == part)
            if len(faces) == 0:
                continue
            name = names[part] if part >= 0 else UNLABELLED_NODE
            piece = _coloured_piece(mesh, faces, name, palette[part] if part >= 0 else GREY)
            scene.add_geometry(piece, node_name=name, geom_name=name)
            if part >= 0:
                counts[name]["faces"] = len(faces)
                written.append(_export(piece, parts_dir / f"{safe_name(name)}.glb"))
        written.append(_export(scene, out_dir / "mesh.glb"))
        written += _write_labels(out_dir / "face_labels", face_labels)
    else:
        for part, name in enumerate(names):
            mask = point_labels == part
            if mask.any():
                piece = trimesh.PointCloud(points[mask], colors=colour_labels(
                    point_labels[mask], palette))
                written.append(_export(piece, parts_dir / f"{safe_name(name)}.ply"))
    summary = {"shape_id": shape.shape_id, "method": labelling.method,
               "parts": [{"name": n, "color": palette[i].tolist(), **counts[n]}
                         for i, n in enumerate(names)],
               "unlabelled_points": int((point_labels < 0).sum())}
    written.append(write_text(out_dir / "labels.json", json.dumps(summary, indent=1)))
    key = legend(part_entries(names, palette), width=480, size=18)
    written.append(_save_image(key, out_dir / "legend.png"))
    return written


def read_exported_labels(folder: Path) -> Labelling | None:
    """The Labelling an export wrote into ``folder`` (point and face labels, part names
    from labels.json), or None when ``folder`` holds no exported labels."""
    points = folder / "point_labels.npy"
    summary = folder / "labels.json"
    if not points.is_file() or not summary.is_file():
        return None
    try:
        info = json.loads(summary.read_text())
        names = [p["name"] for p in info["parts"]]
        method = str(info.get("method", ""))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PartsegError(f"{summary}: not a readable export ({first_line(exc)})") from exc
    faces = folder / "face_labels.npy"
    return Labelling(point_labels=read_label_file(points),
                     face_labels=read_label_file(faces) if faces.is_file() else None,
                     part_names=names, method=method)


def read_label_file(path: Path) -> np.ndarray:
    """(N,) int64 labels from a label file: ``.npy`` (np.load goes by content, so an
    ``.npz`` archive holding one array is read whatever its name) or text, one integer per
    line. Anything else is an InputError naming ``path``: unreadable data, an archive of
    several arrays, strings, or fractions that a cast would silently truncate (whole
    numbers stored as floats are accepted)."""
    from .shapes import integer_labels, load_numpy

    if path.suffix in (".npy", ".npz"):
        loaded = load_numpy(path)
    else:
        try:
            loaded = np.loadtxt(path, dtype=np.float64, ndmin=1)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"not a label file ({first_line(exc)})") from exc
    if isinstance(loaded, dict):
        if len(loaded) != 1:
            raise InputError(path, f"an .npz archive of {len(loaded)} arrays "
                                   f"{sorted(loaded)}; expected one array of labels")
        loaded = next(iter(loaded.values()))
    return integer_labels(loaded, path)


def _coloured_piece(mesh, faces: np.ndarray, name: str, colour: np.ndarray):
    """The faces as their own mesh (own vertices) with one named material."""
    from trimesh.visual import TextureVisuals
    from trimesh.visual.material import PBRMaterial

    piece = mesh.submesh([faces], append=True)
    rgba = [int(c) for c in colour] + [255]
    piece.visual = TextureVisuals(material=PBRMaterial(name=name, baseColorFactor=rgba,
                                                       metallicFactor=0.0,
                                                       roughnessFactor=0.8))
    return piece


def _write_labels(stem: Path, labels: np.ndarray) -> list[Path]:
    """``stem.npy`` (int32) and ``stem.txt`` (one integer per line), atomically."""
    npy, txt = stem.with_suffix(".npy"), stem.with_suffix(".txt")
    for path, write in ((npy, lambda f: np.save(f, labels.astype(np.int32))),
                        (txt, lambda f: np.savetxt(f, labels, fmt="%d"))):
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            write(handle)
    return [npy, txt]


def _save_image(image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def _export(geometry: object, path: Path) -> Path:
    with atomic_path(path) as tmp:
        geometry.export(tmp, file_type=path.suffix[1:])
    return path

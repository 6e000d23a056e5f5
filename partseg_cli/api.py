"""The Python API: build shapes from arrays or files, run any stage, segment in one call.

Everything the CLI does goes through these functions and the stage modules they call,
so a script gets the same caching, keys and results as `partseg` on the command line::

    import numpy as np
    import partseg_cli as ps

    shape = ps.shape_from_arrays(points, part_names=["back", "seat", "leg"],
                                 labels=labels, category="chair")
    labelling = ps.segment(shape, ["back", "seat", "leg"], teacher="simulated")
    labelling.point_labels          # (N,) int32 index into labelling.part_names, -1 none

    work = ps.open_workspace("runs/chairs", create=True)
    ps.add_shape(work, shape)
    for stage in ("render", "detect", "superpoints", "backproject", "vote"):
        ps.run_stage(work, stage, teacher="simulated")   # options go to the stage's config

Heavy libraries load only inside the stages that need them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, PartsegError
from .pipeline import STAGE_VERSIONS, StageReport
from .records import Labelling, Shape
from .store import Workspace, content_key, safe_id, shape_scope

# Stages in pipeline order: (module, config class name, default inputs of run()).
STAGES: dict[str, tuple[str, str]] = {
    "render": ("render", "RenderConfig"),
    "detect": ("detect", "DetectConfig"),
    "sam-refine": ("sam_refine", "RefineConfig"),
    "superpoints": ("superpoints", "SuperpointConfig"),
    "backproject": ("backproject", "BackprojectConfig"),
    "vote": ("vote", "VoteConfig"),
    "distill": ("distill", "DistillConfig"),
    "rescore": ("distill", "DistillConfig"),
}
METHODS = ("vote", "distill")


def open_workspace(path: str | Path, create: bool = False) -> Workspace:
    """The workspace folder at ``path`` (made when ``create``), as `partseg` uses it."""
    return Workspace.open(Path(path), create=create)


def load(path: str | Path, n_points: int = 10000, seed: int = 0) -> list[Shape]:
    """Every shape in a file or dataset folder (any layout `partseg render` reads).

    Raises InputError (one line naming the file) for a missing or unusable file."""
    from .shapes import discover, load_shape

    sources, problems = discover(path)
    if not sources:
        raise InputError(*(problems[0] if problems else (str(path), "no shape found")))
    return [load_shape(s, n_points=n_points, seed=seed) for s in sources]


def shape_from_arrays(points: np.ndarray | None = None, *,
                      vertices: np.ndarray | None = None, faces: np.ndarray | None = None,
                      normals: np.ndarray | None = None, colors: np.ndarray | None = None,
                      labels: np.ndarray | None = None, part_names: Sequence[str] = (),
                      category: str = "", shape_id: str = "shape", n_points: int = 10000,
                      seed: int = 0) -> Shape:
    """A Shape from arrays, validated and normalised like a loaded file.

    Either a point cloud, ``points`` (N, 3) with optional ``normals`` (N, 3), ``colors``
    (N, 3) in [0, 1] and ``labels`` (N,) ints (-1 unlabelled); or a mesh, ``vertices``
    (V, 3) and ``faces`` (F, 3), with optional per-vertex ``colors`` and per-face
    ``labels``, sampled into ``n_points`` points (deterministic given ``seed``).
    ``labels`` index ``part_names``. Raises InputError for bad arrays.
    """
    from .shapes import _cloud_shape, _CloudData, _mesh_shape, _MeshData

    where = Path(f"<arrays of {shape_id}>")
    names = list(part_names) or None
    if vertices is not None or faces is not None:
        if vertices is None or faces is None or points is not None:
            raise InputError(where, "give points, or vertices and faces (a mesh)")
        vertices = np.asarray(vertices, np.float64)
        grey = np.full((len(vertices), 3), 0.5, np.float32)
        data = _MeshData(vertices, np.asarray(faces, np.int64),
                         grey if colors is None else np.asarray(colors, np.float32),
                         None if labels is None else np.asarray(labels, np.int32))
        if data.face_labels is not None and len(data.face_labels) != len(data.faces):
            raise InputError(where, f"{len(data.face_labels)} labels for {len(data.faces)} "
                                    "faces")
        shape = _mesh_shape(data, where, n_points, seed)
    elif points is not None:
        shape = _cloud_shape(_CloudData(np.asarray(points, np.float64), normals, colors,
                                        labels), where, names)
    else:
        raise InputError(where, "give points, or vertices and faces (a mesh)")
    shape.shape_id, shape.part_names, shape.category = safe_id(shape_id), names or [], category
    return shape


def add_shape(workspace: Workspace, shape: Shape, force: bool = False) -> str:
    """Store ``shape`` as a workspace's "shape" stage (keyed by its arrays' bytes, so an
    unchanged shape keeps its downstream results); returns its shape id."""
    from .records import to_arrays

    arrays, attrs = to_arrays(shape)
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode() + np.ascontiguousarray(arrays[name]).tobytes())
    digest.update(repr(sorted(attrs.items())).encode())
    params = {"digest": digest.hexdigest()[:20], "from": "arrays"}
    key = content_key("shape", STAGE_VERSIONS["shape"], params, [])
    scope = shape_scope(shape.shape_id)
    if force or workspace.key(scope, "shape") != key:
        workspace.write(scope, "shape", shape, key=key, params=params)
    return shape.shape_id


def stage_config(stage: str, **options: Any) -> Any:
    """The config dataclass of ``stage`` (as its CLI options), from keyword options.

    Raises PartsegError naming the stage's options for an unknown one."""
    import importlib

    if stage not in STAGES:
        raise PartsegError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    module, cls_name = STAGES[stage]
    cls = getattr(importlib.import_module(f".{module}", __package__), cls_name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise PartsegError(f"{stage}: unknown option(s) {', '.join(unknown)}; its options: "
                           f"{', '.join(sorted(fields))}")
    return cls(**options)


def run_stage(workspace: Workspace, stage: str, shape_ids: Sequence[str] | None = None,
              force: bool = False, **options: Any) -> StageReport:
    """Run one stage over ``shape_ids`` (default: every shape), cached as the CLI is.

    ``options`` are the fields of the stage's config (e.g. ``teacher="simulated"`` for
    detect, ``threshold=0.6`` for vote); options another stage would take are dropped,
    so one dict can drive a whole pipeline. Returns the StageReport (computed, skipped,
    failed, notes)."""
    import importlib

    if stage not in STAGES:
        raise PartsegError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    module_name, cls_name = STAGES[stage]
    module = importlib.import_module(f".{module_name}", __package__)
    fields = {f.name for f in dataclasses.fields(getattr(module, cls_name))}
    config = stage_config(stage, **{k: v for k, v in options.items() if k in fields})
    ids = list(shape_ids) if shape_ids is not None else workspace.shape_ids()
    if stage == "rescore":
        from . import rescore

        return rescore.run(workspace, ids, config, force)
    return module.run(workspace, ids, config, force)


def segment(mesh_or_points: Shape | str | Path | np.ndarray | tuple[np.ndarray, np.ndarray]
            | Any, parts: Sequence[str], teacher: str = "owlv2", method: str = "vote",
            work: str | Path | None = None, **options: Any) -> Labelling:
    """Segment one shape into ``parts`` in one call; returns its Labelling.

    mesh_or_points: a Shape, a file path, an (N, 3) point array, a (vertices, faces)
    pair, or any object with ``vertices`` and ``faces`` (a trimesh.Trimesh).
    teacher: as `partseg run --teacher` (owlv2, grounding-dino, clipseg, simulated, ...).
    method: "vote" (PartSLIP voting) or "distill" (a PartDistill student on top).
    work: a workspace folder to keep (and reuse the cache of); default a temporary one.
    options: stage config fields, e.g. ``views=4`` (render n_views), ``resolution=256``,
    ``category="chair"``, ``prompt="a {part} of a {category}"``, ``model=...``,
    ``device="cpu"``, ``seed=0``, ``epochs=25``.
    Raises PartsegError (one line) when a stage fails for the shape.
    """
    if method not in METHODS:
        raise PartsegError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    shape = _as_shape(mesh_or_points, options.pop("n_points", 10000), options.get("seed", 0))
    if "views" in options:
        options["n_views"] = options.pop("views")
    options.update(teacher=teacher, parts=list(parts))
    if work is not None:
        return _segment_in(open_workspace(work, create=True), shape, method, options)
    with tempfile.TemporaryDirectory(prefix="partseg-") as tmp:
        return _segment_in(open_workspace(tmp, create=True), shape, method, options)


def _as_shape(value: Any, n_points: int, seed: int) -> Shape:
    if isinstance(value, Shape):
        return value
    if isinstance(value, (str, Path)):
        shapes = load(value, n_points=n_points, seed=seed)
        if len(shapes) != 1:
            raise InputError(value, f"holds {len(shapes)} shapes; segment takes one")
        return shapes[0]
    if isinstance(value, tuple) and len(value) == 2:
        return shape_from_arrays(vertices=value[0], faces=value[1], n_points=n_points,
                                 seed=seed)
    if hasattr(value, "vertices") and hasattr(value, "faces"):
        return shape_from_arrays(vertices=np.asarray(value.vertices),
                                 faces=np.asarray(value.faces), n_points=n_points, seed=seed)
    return shape_from_arrays(np.asarray(value), seed=seed)


def _segment_in(workspace: Workspace, shape: Shape, method: str,
                options: dict[str, Any]) -> Labelling:
    sid = add_shape(workspace, shape)
    stages = ["render", "detect", "superpoints", "backproject", "vote"]
    if method == "distill":
        stages.append("distill")
    for stage in stages:
        report = run_stage(workspace, stage, [sid], **options)
        if sid in report.failed:
            raise PartsegError(f"{stage}: {report.failed[sid]}")
    return workspace.read_record(shape_scope(sid), method, Labelling)

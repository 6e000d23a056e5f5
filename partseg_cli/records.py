"""Typed records passed between stages and stored in the workspace.

Every record is a dataclass whose numpy fields become arrays in the store and whose
other fields (str, int, float, bool, lists of those) become JSON attributes; see
`to_arrays` / `from_arrays`. Shapes, dtypes and frames are given per field.

Frames: all 3D coordinates are in the *normalised* shape frame (centred on the
mean point, divided by the largest point norm, as in PartSLIP); `Normalization`
maps back to the source file's frame. Pixel coordinates are (x, y) = (column, row)
with the origin at the top-left pixel corner; boxes are XYXY in pixels.
Part labels index into the shape's `part_names`; -1 means unlabelled/background.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

UNLABELLED = -1


@dataclass
class Normalization:
    """Source frame = normalised frame * scale + center."""

    center: np.ndarray  # (3,) float64
    scale: float

    def to_source(self, xyz: np.ndarray) -> np.ndarray:
        return xyz * self.scale + self.center


@dataclass
class Mesh:
    """Triangle mesh in the normalised frame."""

    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    vertex_colors: np.ndarray | None = None  # (V, 3) float32 in [0, 1]
    face_labels: np.ndarray | None = None  # (F,) int32 ground-truth part, -1 unlabelled
    face_instances: np.ndarray | None = None  # (F,) int32 ground-truth instance, -1 none


@dataclass
class Shape:
    """One shape: dense points (sampled from the mesh when there is one) plus metadata."""

    shape_id: str
    points: np.ndarray  # (N, 3) float32, normalised frame
    normals: np.ndarray  # (N, 3) float32, unit length (zero where unknown)
    colors: np.ndarray  # (N, 3) float32 in [0, 1]
    normalization: Normalization
    part_names: list[str] = field(default_factory=list)
    category: str = ""
    source: str = ""  # path of the file or folder it was loaded from
    mesh: Mesh | None = None
    point_faces: np.ndarray | None = None  # (N,) int32 face each point was sampled on
    point_labels: np.ndarray | None = None  # (N,) int32 ground-truth part, -1 unlabelled
    point_instances: np.ndarray | None = None  # (N,) int32 ground-truth instance, -1 none

    @property
    def has_labels(self) -> bool:
        return self.point_labels is not None

    @property
    def n_points(self) -> int:
        return int(self.points.shape[0])


@dataclass
class Cameras:
    """Pinhole cameras, OpenCV convention (x right, y down, z forward)."""

    intrinsics: np.ndarray  # (V, 3, 3) float32, pixels
    extrinsics: np.ndarray  # (V, 4, 4) float32, world (normalised frame) -> camera
    width: int
    height: int
    elevations: list[float] = field(default_factory=list)  # degrees, per view
    azimuths: list[float] = field(default_factory=list)  # degrees, per view

    @property
    def n_views(self) -> int:
        return int(self.intrinsics.shape[0])


@dataclass
class Views:
    """Rendered views of one shape. Background pixels: pixel_point == -1."""

    cameras: Cameras
    rgb: np.ndarray  # (V, H, W, 3) uint8, white background
    depth: np.ndarray  # (V, H, W) float32 camera-z, 0 on background
    pixel_point: np.ndarray  # (V, H, W) int32 index into Shape.points, -1 background
    normals: np.ndarray | None = None  # (V, H, W, 3) float16 world normals (meshes)
    pixel_face: np.ndarray | None = None  # (V, H, W) int32 mesh face, -1 (meshes only)

    @property
    def n_views(self) -> int:
        return int(self.rgb.shape[0])


@dataclass
class Boxes:
    """2D part boxes from a box teacher (B-VLM), all views of one shape."""

    view: np.ndarray  # (B,) int32
    xyxy: np.ndarray  # (B, 4) float32 pixels
    part_probs: np.ndarray  # (B, P) float32, per-part probabilities
    confidence: np.ndarray  # (B,) float32 in [0, 1]
    features: np.ndarray  # (B, D) float32, the detector's embedding of the box
    part_names: list[str] = field(default_factory=list)
    teacher: str = ""
    training_shape: bool = False  # the (trained) teacher learned from this shape
    prompts: list[str] = field(default_factory=list)  # the text sent (empty: not prompted)

    @property
    def labels(self) -> np.ndarray:
        """(B,) int32 part index of each box (argmax of part_probs)."""
        if len(self.part_probs) == 0:
            return np.zeros(0, np.int32)
        return self.part_probs.argmax(axis=1).astype(np.int32)

    def __len__(self) -> int:
        return int(self.view.shape[0])


@dataclass
class PixelMaps:
    """Per-pixel part probabilities from a pixel teacher (P-VLM)."""

    probs: np.ndarray  # (V, H, W, P) float16
    part_names: list[str] = field(default_factory=list)
    teacher: str = ""
    training_shape: bool = False  # the (trained) teacher learned from this shape
    prompts: list[str] = field(default_factory=list)  # the text sent (empty: not prompted)


@dataclass
class Masks:
    """Box -> mask refinement (SAM), aligned with the Boxes they refine."""

    masks: np.ndarray  # (B, H, W) bool
    scores: np.ndarray  # (B,) float32, the refiner's own quality estimate
    refiner: str = ""


@dataclass
class Superpoints:
    labels: np.ndarray  # (N,) int32 superpoint id in [0, K)

    @property
    def count(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0


@dataclass
class KnowledgeUnits:
    """PartDistill knowledge units (Eq. 1-2): 2D predictions lifted onto points."""

    labels: np.ndarray  # (K,) int32 part index Y
    masks: np.ndarray  # (K, N) bool point mask M
    confidence: np.ndarray  # (K,) float32 C
    view: np.ndarray  # (K,) int32 view the unit comes from
    source_index: np.ndarray  # (K,) int32 index of the box / component it came from
    rescored_confidence: np.ndarray | None = None  # (K,) float32 C_bd after rescoring
    part_probs: np.ndarray | None = None  # (K, P) float32 Y^d: the teacher's per-part scores
    # (E, P) float16 per-point Y^d_n of pixel-map units on their mask's points, in the
    # row-major order of np.nonzero(masks) (a point's mean over its pixels in the unit's
    # component); None for box and mask units, whose Y^d is the same on every point.
    point_part_probs: np.ndarray | None = None
    source: str = ""  # "boxes", "masks" or "pixels"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def pair_probs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Y^d on every (unit, point) of the masks: unit (E,) int64, point (E,) int64 in
        np.nonzero(masks) order, probs (E, P) float32. Raises ValueError without Y^d."""
        unit, point = np.nonzero(self.masks)
        if self.point_part_probs is not None:
            probs = np.asarray(self.point_part_probs, np.float32)
            if probs.shape[0] != unit.size:
                raise ValueError(f"{probs.shape[0]} per-point part probabilities for "
                                 f"{unit.size} masked points")
            return unit, point, probs
        if self.part_probs is None:
            raise ValueError("knowledge units have no part probabilities Y^d")
        return unit, point, np.asarray(self.part_probs, np.float32)[unit]


@dataclass
class Labelling:
    """A method's segmentation of one shape."""

    point_labels: np.ndarray  # (N,) int32 part index, -1 unlabelled
    point_probs: np.ndarray | None = None  # (N, P) float32
    point_instances: np.ndarray | None = None  # (N,) int32 instance id, -1 none
    instance_scores: np.ndarray | None = None  # (I,) float32 confidence per instance id
    face_labels: np.ndarray | None = None  # (F,) int32 for meshes
    part_names: list[str] = field(default_factory=list)
    method: str = ""
    training_shape: bool = False  # the method learned from this shape: never scored as test


# --- generic (de)serialisation ------------------------------------------------------

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> type | None:
    """The dataclass inside a (possibly Optional) annotation, or None."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and dataclasses.is_dataclass(arg):
                return arg
    return None


def _resolved_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, globalns=globals())


def to_arrays(record: Any, prefix: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split a record into arrays (numpy fields) and JSON attrs (everything else).

    Nested dataclasses are flattened with "/" in the names; a None field is omitted.
    """
    arrays: dict[str, np.ndarray] = {}
    attrs: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        name = prefix + f.name
        if value is None:
            continue
        if isinstance(value, np.ndarray):
            arrays[name] = value
        elif dataclasses.is_dataclass(value):
            sub_arrays, sub_attrs = to_arrays(value, name + "/")
            arrays.update(sub_arrays)
            attrs.update(sub_attrs)
            attrs[name + "/"] = True  # marks presence of an all-None sub-record
        else:
            attrs[name] = json.loads(json.dumps(value))
    return arrays, attrs


def from_arrays(cls: type[T], arrays: dict[str, np.ndarray], attrs: dict[str, Any],
                prefix: str = "") -> T:
    """Inverse of `to_arrays`."""
    hints = _resolved_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        sub = _is_dataclass_type(hints[f.name])
        if sub is not None:
            if attrs.get(name + "/"):
                kwargs[f.name] = from_arrays(sub, arrays, attrs, name + "/")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise KeyError(name)
        elif name in arrays:
            kwargs[f.name] = np.asarray(arrays[name])
        elif name in attrs:
            kwargs[f.name] = attrs[name]
    return cls(**kwargs)

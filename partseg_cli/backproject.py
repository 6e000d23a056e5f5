"""Lifting 2D teacher predictions onto the points: PartDistill knowledge units (Eq. 1-2).

The only 2D<->3D correspondence is the render stage's ``pixel_point`` map (V, H, W)
int32: the index of the point drawn at each pixel, -1 on background (one point per
pixel, z-buffered, as in PartSLIP). A knowledge unit is (Y, M, C): a part label, a
boolean mask over the N points, and a confidence (records.KnowledgeUnits), plus the
teacher's per-part scores Y^d (BiPart's Eq. 4 needs them): a box's part_probs for a box
unit and for the SAM mask refined from it; for a pixel-map component, per point, the
mean of the per-part probabilities over the point's pixels in the component
(PartDistill's Y^d_n, whose max is Eq. 3's C^d_n), and per unit their mean over the
component's pixels.

Membership rules (a point is usually drawn as a splat of a few pixels):
- box: the point is inside when the centre of the pixels showing it in the box's
  view lies inside the box. This is PartSLIP's test on the projected point, computed
  from the pixel map alone (no cameras needed), and it gives every point exactly one
  position per view, so a point is never half in a box.
- mask / pixel-map component: the point is inside when at least half of its pixels in
  that view are inside the region.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import PartsegError, StoreError
from .pipeline import StageReport, is_fresh, run_per_shape
from .records import Boxes, KnowledgeUnits, Masks, PixelMaps
from .store import Workspace, shape_scope

_SQUARE = np.ones((3, 3), bool)


def visible_points(pixel_point: np.ndarray, n_points: int) -> np.ndarray:
    """Which points each view shows.

    pixel_point: (V, H, W) int32 point index per pixel, -1 background.
    Returns (V, N) bool, True where the point owns at least one pixel of the view.
    """
    n_views = pixel_point.shape[0]
    keys, _ = _view_point_keys(pixel_point, n_points)
    visible = np.zeros(n_views * n_points, bool)
    visible[keys] = True
    return visible.reshape(n_views, n_points)


def point_pixel_centres(pixel_point: np.ndarray, n_points: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Per view, how many pixels show each point and where their centre is.

    pixel_point: (V, H, W) int32, -1 background.
    Returns (counts (V, N) int64, centres (V, N, 2) float64 (x, y) in pixels with the
    origin at the top-left pixel corner, NaN where the point is not visible).
    """
    n_views, _, width = pixel_point.shape
    keys, pixel = _view_point_keys(pixel_point, n_points)
    size = n_views * n_points
    counts = np.bincount(keys, minlength=size)
    # +0.5: a pixel's centre, so a box edge on a pixel corner splits pixels cleanly.
    sum_x = np.bincount(keys, weights=pixel % width + 0.5, minlength=size)
    sum_y = np.bincount(keys, weights=pixel // width + 0.5, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        centres = np.stack([sum_x / counts, sum_y / counts], axis=-1)
    return counts.reshape(n_views, n_points), centres.reshape(n_views, n_points, 2)


def units_from_boxes(boxes: Boxes, pixel_point: np.ndarray, n_points: int,
                     whole_object_fraction: float = 0.98) -> KnowledgeUnits:
    """One knowledge unit per box: the points whose pixel centre lies in the box.

    boxes: B boxes, XYXY pixels, in views of ``pixel_point`` (V, H, W) int32.
    Boxes whose unit holds >= ``whole_object_fraction`` of the points visible in their
    view are dropped as whole-object boxes (GLIP's habit of boxing the whole object
    under a part name). The reference tests all projected points; only the visible
    ones are known from the pixel map, so the fraction is over those.
    Returns KnowledgeUnits with labels = box argmax part, confidence = box confidence,
    part_probs = the box's part_probs, source_index = box index, source "boxes"; masks
    (K, N) bool.
    """
    counts, centres = point_pixel_centres(pixel_point, n_points)
    view = boxes.view.astype(np.intp)
    x = centres[view, :, 0]  # (B, N), NaN for invisible points compares False below
    y = centres[view, :, 1]
    x0, y0, x1, y1 = (boxes.xyxy[:, i:i + 1].astype(np.float64) for i in range(4))
    masks = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return _make_units(masks, boxes.labels, boxes.confidence, boxes.part_probs, boxes.view,
                       np.arange(len(boxes)), counts, whole_object_fraction, "boxes")


def units_from_masks(boxes: Boxes, masks: Masks, pixel_point: np.ndarray, n_points: int,
                     whole_object_fraction: float = 0.98) -> KnowledgeUnits:
    """One knowledge unit per SAM mask (aligned with ``boxes``): the points with at least
    half of their pixels in the mask.

    masks.masks: (B, H, W) bool, same H, W as ``pixel_point`` (V, H, W) int32.
    Label, confidence and part_probs come from the box the mask refines (the refiner's own score
    rates the mask shape, not the part name). Masks covering >= ``whole_object_fraction``
    of the points visible in their view are dropped as whole-object units.
    Returns KnowledgeUnits, source_index = box index, source "masks".
    """
    n_boxes = len(boxes)
    if masks.masks.shape[0] != n_boxes:
        raise ValueError(f"{masks.masks.shape[0]} masks for {n_boxes} boxes")
    counts = _pixel_counts(pixel_point, n_points)
    per_view = pixel_point[0].size
    box, pixel = np.divmod(np.flatnonzero(masks.masks), per_view)
    point = pixel_point.reshape(len(pixel_point), -1)[boxes.view[box], pixel]
    keep = point >= 0
    box, point = box[keep], point[keep]
    inside = np.bincount(box.astype(np.int64) * n_points + point,
                         minlength=n_boxes * n_points).reshape(n_boxes, n_points)
    unit_masks = (inside > 0) & (2 * inside >= counts[boxes.view])
    return _make_units(unit_masks, boxes.labels, boxes.confidence, boxes.part_probs,
                       boxes.view, np.arange(n_boxes), counts, whole_object_fraction, "masks")


def units_from_pixel_maps(maps: PixelMaps, pixel_point: np.ndarray, n_points: int,
                          min_pixels: int = 20, min_probability: float = 0.5,
                          gap_pixels: int = 2) -> KnowledgeUnits:
    """One knowledge unit per connected component of same-part pixels (PartDistill Eq. 1).

    maps.probs: (V, H, W, P) per-part probabilities on the views of ``pixel_point``.
    Each foreground pixel takes its most probable part; it counts as background when
    that probability is below ``min_probability`` (the maps have no background channel,
    so a pixel no part claims must not be forced into one). Components use
    8-connectivity within one view. Splatted points leave background gaps between them
    that would shatter one part into hundreds of pieces, so the gaps that a closing of
    the silhouette by ``gap_pixels`` (3x3 iterations) fills take the part of a
    neighbouring claimed pixel (a 3x3 max filter, ``gap_pixels`` rounds) for the
    connectivity only: component sizes, confidences and masks use foreground pixels.
    Components with fewer than ``min_pixels`` foreground pixels are dropped as speckle.
    M = points with at least half their pixels in the component, Y = its part, C = mean
    probability of that part over the component's pixels; part_probs (K, P) the mean of
    every part's probability over the component's pixels, point_part_probs (E, P) the
    same mean over each masked point's pixels in the component (Y^d_n).
    Returns KnowledgeUnits, source_index = component number within its view, "pixels".
    """
    import cc3d  # imported here, as scipy: a cached run does not need them
    from scipy import ndimage

    n_views = pixel_point.shape[0]
    n_parts = maps.probs.shape[-1]
    counts = _pixel_counts(pixel_point, n_points)
    labels, confidence, views, index, unit_keys = [], [], [], [], []
    unit_probs, pixel_probs = [], []
    n_units = 0
    for v in range(n_views):  # 10 views: a per-view loop, the pixels are vectorised
        fg = pixel_point[v] >= 0
        fg_pixels = np.flatnonzero(fg)
        # Only foreground pixels matter; float16 arithmetic is slow in numpy.
        probs = maps.probs[v].reshape(fg.size, -1)[fg_pixels].astype(np.float32)
        fg_part = probs.argmax(axis=1)
        fg_best = probs[np.arange(fg_pixels.size), fg_part]
        claim = fg_best >= min_probability
        pixels, part, best = fg_pixels[claim], fg_part[claim], fg_best[claim]
        # cc3d labels each connected run of equal non-zero values, hence part + 1.
        region = np.zeros(fg.shape, np.int32)
        region.ravel()[pixels] = part + 1
        if gap_pixels > 0 and pixels.size:
            # Morphology on the object's bounding box only (plus a margin so the
            # closing never meets the crop edge).
            window = _crop(fg, gap_pixels + 1)
            sub_fg, sub = fg[window], region[window]
            gaps = ndimage.binary_closing(sub_fg, _SQUARE, iterations=gap_pixels) & ~sub_fg
            for _ in range(gap_pixels):  # dilation rounds over the crop
                grown = ndimage.grey_dilation(sub, footprint=_SQUARE)
                sub = np.where(gaps & (sub == 0), grown, sub)
            region[window] = sub
        comp, n_comp = cc3d.connected_components(region, connectivity=8, return_N=True)
        cid = comp.ravel()[pixels].astype(np.int64) - 1
        size = np.bincount(cid, minlength=n_comp)
        prob_sum = np.bincount(cid, weights=best, minlength=n_comp)
        comp_part = np.zeros(n_comp, np.int32)
        comp_part[cid] = part
        kept = np.nonzero(size >= min_pixels)[0]
        claimed = probs[claim]  # (n_claimed, P)
        comp_probs = np.stack([np.bincount(cid, weights=claimed[:, r], minlength=n_comp)
                               for r in range(n_parts)], axis=1).reshape(n_comp, n_parts)
        new_id = np.full(n_comp, -1, np.int64)
        new_id[kept] = n_units + np.arange(kept.size)
        unit = new_id[cid]
        ok = unit >= 0
        unit_keys.append(unit[ok] * n_points + pixel_point[v].ravel()[pixels[ok]])
        pixel_probs.append(claimed[ok])
        unit_probs.append(comp_probs[kept] / size[kept][:, None])
        labels.append(comp_part[kept])
        confidence.append((prob_sum[kept] / size[kept]).astype(np.float32))
        views.append(np.full(kept.size, v, np.int32))
        index.append(kept.astype(np.int32))
        n_units += kept.size
    views_all = np.concatenate(views)
    # Sparse (unit, point) pixel counts: hundreds of units x N dense ints would dominate.
    keys, where, inside = np.unique(np.concatenate(unit_keys), return_inverse=True,
                                    return_counts=True)
    where = where.ravel()
    unit, point = np.divmod(keys, n_points)
    majority = 2 * inside >= counts[views_all[unit], point]
    unit_masks = np.zeros(n_units * n_points, bool)
    unit_masks[keys[majority]] = True
    unit_masks = unit_masks.reshape(n_units, n_points)
    # Y^d_n: the mean over the point's pixels in the component; keys are sorted, so the
    # kept ones are in the row-major order of np.nonzero(unit_masks).
    flat_probs = np.concatenate(pixel_probs) if pixel_probs else np.zeros((0, n_parts))
    pair_sums = np.stack([np.bincount(where, weights=flat_probs[:, r], minlength=keys.size)
                          for r in range(n_parts)], axis=1).reshape(keys.size, n_parts)
    point_probs = (pair_sums[majority] / inside[majority, None]).astype(np.float16)
    return KnowledgeUnits(labels=np.concatenate(labels).astype(np.int32), masks=unit_masks,
                          confidence=np.concatenate(confidence).astype(np.float32),
                          view=views_all, source_index=np.concatenate(index),
                          part_probs=np.concatenate(unit_probs).reshape(n_units, n_parts)
                          .astype(np.float32),
                          point_part_probs=point_probs, source="pixels")


def face_labels_from_points(points: np.ndarray, point_probs_or_labels: np.ndarray,
                            mesh_vertices: np.ndarray, mesh_faces: np.ndarray, k: int = 5
                            ) -> np.ndarray:
    """Label mesh faces by their k nearest points (PartDistill's mesh output).

    points: (N, 3); point_probs_or_labels: (N, P) float part probabilities or (N,) int
    labels with -1 unlabelled; mesh_vertices (Vm, 3), mesh_faces (F, 3) int.
    Each face centroid sums the probabilities (labels count as one-hot, -1 as zeros) of
    its k nearest points and takes the argmax; ties go to the lower part index.
    Returns (F,) int32, -1 where the neighbours carry no label.
    """
    values = np.asarray(point_probs_or_labels)
    if values.ndim == 1:
        n_parts = int(values.max()) + 1 if values.size else 0
        onehot = np.zeros((values.shape[0], max(n_parts, 1)), np.float32)
        labelled = np.nonzero(values >= 0)[0]
        onehot[labelled, values[labelled]] = 1.0
        values = onehot
    centroids = np.asarray(mesh_vertices, np.float64)[np.asarray(mesh_faces)].mean(axis=1)
    k = min(k, len(points))
    from scipy.spatial import cKDTree

    _, nearest = cKDTree(np.asarray(points, np.float64)).query(centroids, k=k)
    nearest = nearest.reshape(len(centroids), k)
    votes = values[nearest].sum(axis=1)  # (F, P)
    labels = votes.argmax(axis=1).astype(np.int32)
    labels[votes.max(axis=1) <= 0] = -1
    return labels


# --- helpers --------------------------------------------------------------------------

def _view_point_keys(pixel_point: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """For every foreground pixel: view * N + point, and the pixel's flat index in its
    view (row * W + col); both (n_fg,) int64."""
    per_view = pixel_point[0].size
    flat = pixel_point.reshape(-1)
    # 1-D flatnonzero + divmod: several times faster than a 2-D np.nonzero.
    index = np.flatnonzero(flat >= 0)
    view, pixel = np.divmod(index, per_view)
    return view * n_points + flat[index], pixel


def _pixel_counts(pixel_point: np.ndarray, n_points: int) -> np.ndarray:
    """(V, N) int64 number of pixels showing each point in each view."""
    n_views = pixel_point.shape[0]
    keys, _ = _view_point_keys(pixel_point, n_points)
    return np.bincount(keys, minlength=n_views * n_points).reshape(n_views, n_points)


def _crop(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Row and column slices of a non-empty 2D mask's bounding box grown by ``margin``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(cols[0] - margin, 0), cols[-1] + margin + 1))


def _make_units(masks: np.ndarray, labels: np.ndarray, confidence: np.ndarray,
                part_probs: np.ndarray, view: np.ndarray, index: np.ndarray,
                counts: np.ndarray, whole_object_fraction: float, source: str
                ) -> KnowledgeUnits:
    """Drop whole-object and empty units and pack the rest (part_probs: (B, P) Y^d)."""
    view = np.asarray(view, np.intp)
    n_visible = (counts[view] > 0).sum(axis=1)
    covered = masks.sum(axis=1)
    keep = (covered > 0) & (covered < whole_object_fraction * np.maximum(n_visible, 1))
    return KnowledgeUnits(labels=np.asarray(labels, np.int32)[keep], masks=masks[keep],
                          confidence=np.asarray(confidence, np.float32)[keep],
                          part_probs=np.asarray(part_probs, np.float32)[keep],
                          view=view[keep].astype(np.int32),
                          source_index=np.asarray(index, np.int32)[keep], source=source)


# --- the `backproject` stage --------------------------------------------------------

SOURCES = ("auto", "boxes", "masks", "pixels")


@dataclass
class BackprojectConfig:
    """Options of `partseg backproject` (see its --help)."""

    source: str = "auto"  # auto: SAM masks when stored, else the teacher's boxes / maps
    whole_object_fraction: float = 0.98
    min_pixels: int = 20
    min_probability: float = 0.5
    gap_pixels: int = 2


def teacher_output(workspace: Workspace, scope: str) -> Boxes | PixelMaps:
    """The "detect" stage's record: Boxes from a box teacher, PixelMaps from a pixel one."""
    artifact = workspace.read(scope, "detect")  # one read: boxes have a "view" array
    return artifact.record(Boxes if "view" in artifact.arrays else PixelMaps)


def read_units(workspace: Workspace, shape_id: str, need_part_probs: bool = False
               ) -> KnowledgeUnits:
    """A shape's stored knowledge units, refused in one line when there are none or when
    ``need_part_probs`` and they were stored by a partseg that kept no Y^d (backproject
    format 1): re-running `backproject` re-derives them."""
    scope = shape_scope(shape_id)
    if not workspace.exists(scope, "backproject"):
        raise StoreError(f"{shape_id}: no knowledge units (run `partseg backproject` first)")
    units = workspace.read_record(scope, "backproject", KnowledgeUnits)
    if need_part_probs and units.part_probs is None:
        raise StoreError(f"{shape_id}: its knowledge units were stored by an older partseg "
                         "without the teacher's part probabilities Y^d; re-run `partseg "
                         "backproject` on this workspace to re-derive them")
    return units


def _resolve_source(workspace: Workspace, scope: str, source: str) -> str:
    if source not in SOURCES:
        raise PartsegError(f"unknown backproject source {source!r}; choose one of "
                           f"{', '.join(SOURCES)}")
    if source != "auto":
        return source
    if is_fresh(workspace, scope, "sam-refine", ["shape", "render", "detect"]):
        return "masks"  # masks refined from the boxes stored now, not from older ones
    if not workspace.exists(scope, "detect"):
        return "boxes"  # the stage key then reports the missing `detect` output
    kind = (workspace.info(scope, "detect") or {}).get("params", {}).get("kind")
    if kind in ("boxes", "pixels"):
        return kind  # from the attributes alone: opening the arrays costs a cached run
    probe = workspace.read(scope, "detect", names=["view"])
    return "boxes" if "view" in probe.arrays else "pixels"


def run(workspace: Workspace, shape_ids: list[str], config: BackprojectConfig,
        force: bool = False) -> StageReport:
    """Store each shape's knowledge units (records.KnowledgeUnits) as "backproject"."""
    groups: dict[str, list[str]] = {}
    for shape_id in shape_ids:
        source = _resolve_source(workspace, shape_scope(shape_id), config.source)
        groups.setdefault(source, []).append(shape_id)

    def compute(shape_id: str, source: str) -> KnowledgeUnits:
        scope = shape_scope(shape_id)
        n_points = int(workspace.read(scope, "shape", names=["points"]).arrays["points"]
                       .shape[0])
        pixel_point = workspace.read(scope, "render", names=["pixel_point"]
                                     ).arrays["pixel_point"]
        teacher = teacher_output(workspace, scope)
        if source == "pixels":
            if not isinstance(teacher, PixelMaps):
                raise StoreError(f"{shape_id}: the stored detections are boxes, not pixel "
                                 "maps; use --source boxes (or auto)")
            return units_from_pixel_maps(teacher, pixel_point, n_points, config.min_pixels,
                                         config.min_probability, config.gap_pixels)
        if not isinstance(teacher, Boxes):
            raise StoreError(f"{shape_id}: the stored detections are pixel maps, not boxes; "
                             "use --source pixels (or auto)")
        if source == "masks":
            masks = workspace.read_record(scope, "sam-refine", Masks)
            return units_from_masks(teacher, masks, pixel_point, n_points,
                                    config.whole_object_fraction)
        return units_from_boxes(teacher, pixel_point, n_points, config.whole_object_fraction)

    report = StageReport("backproject")
    for source, ids in groups.items():
        inputs = ["shape", "render", "detect"] + (["sam-refine"] if source == "masks" else [])
        params = {**asdict(config), "source": source}
        part = run_per_shape(workspace, "backproject", ids, params, inputs,
                             lambda sid, s=source: compute(sid, s), force)
        report.computed += part.computed
        report.skipped += part.skipped
        report.failed.update(part.failed)
    return report

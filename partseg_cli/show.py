"""`partseg show` and `--png DIR`: per-view debug pictures of what the teacher saw and said.

One PNG per shape and view, ``<shape_id>_view<NN>.png``, with panels side by side:

- **teacher**: the render with the teacher's output drawn over it: boxes outlined in
  their part's colour and tagged "part confidence" (box teachers), SAM masks blended in
  (after `sam-refine`), or each pixel's most likely part where its probability reaches
  0.5 (pixel teachers);
- **prediction** (a stored labelling: `vote`, `distill`, ...): the lifted 3D labels seen
  from that view (mesh faces when the labelling has them, else points);
- **ground truth** and **errors** (correct / wrong part / no part / no ground truth)
  when the shape is labelled;

and a legend of part colours (and error colours) under them. Colours come from
`palette.part_palette`, the same as in exports and the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_path
from .errors import PartsegError
from .palette import (
    ERROR_CLASSES,
    GREY,
    error_image,
    font,
    label_image,
    legend,
    part_entries,
    part_palette,
)
from .records import Boxes, Labelling, Masks, PixelMaps, Shape, Views
from .store import Workspace, shape_scope

if TYPE_CHECKING:
    from PIL import Image

PIXEL_MAP_THRESHOLD = 0.5  # as backproject's default min_probability
MASK_ALPHA = 0.5  # opacity of a part colour over the render
TITLE_SIZE = 15


def labelling_stages(workspace: Workspace, shape_id: str) -> list[str]:
    """The stored labellings of a shape (stage names `evaluate --method` accepts), in
    pipeline order: vote, distill, distill.NAME, ... (a Labelling records its method)."""
    from .pipeline import STAGE_VERSIONS

    scope = shape_scope(shape_id)
    found = [s for s in workspace.stages(scope) if s != "shape"
             and "method" in workspace.read(scope, s, names=[]).record_attrs]
    order = {name: i for i, name in enumerate(STAGE_VERSIONS)}
    return sorted(found, key=lambda s: (order.get(s.split(".")[0], len(order)), s))


def default_method(workspace: Workspace, shape_id: str) -> str | None:
    """The most downstream stored labelling of a shape, or None."""
    stages = labelling_stages(workspace, shape_id)
    return stages[-1] if stages else None


def _remap(labels: np.ndarray, from_names: list[str], names: list[str]) -> np.ndarray:
    """Part indices of ``from_names`` as indices into ``names`` (-1 stays -1)."""
    if not from_names:
        return np.asarray(labels, np.int64)
    lut = np.array([names.index(n) for n in from_names] + [-1], np.int64)
    return lut[np.asarray(labels, np.int64)]


def _resize(img: np.ndarray, scale: float) -> Image.Image:
    from PIL import Image

    picture = Image.fromarray(img)
    if scale == 1.0:
        return picture
    size = (round(img.shape[1] * scale), round(img.shape[0] * scale))
    return picture.resize(size, Image.Resampling.NEAREST)


def _blend(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The render with each labelled pixel tinted by its part colour."""
    out = rgb.astype(np.float32)
    known = labels >= 0
    out[known] = (1 - MASK_ALPHA) * out[known] + MASK_ALPHA * palette[labels[known]]
    return out.astype(np.uint8)


def _draw_boxes(picture: Image.Image, xyxy: np.ndarray, labels: np.ndarray,
                confidence: np.ndarray, names: list[str], palette: np.ndarray,
                scale: float) -> None:
    """Outline each box in its part's colour with a "part 0.83" tag, most confident on top."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(picture)
    face = font(max(10, round(picture.width / 32)))
    for i in np.argsort(confidence, kind="stable"):
        colour = tuple(int(c) for c in palette[labels[i]])
        x0, y0, x1, y1 = (float(v) * scale for v in xyxy[i])
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=max(2, picture.width // 160))
        tag = f"{names[labels[i]]} {float(confidence[i]):.2f}"
        left, top, right, bottom = draw.textbbox((x0 + 2, y0 + 1), tag, font=face)
        if top < 0:  # keep the tag inside the picture
            left, top, right, bottom = left, 1, right, bottom - top + 1
        draw.rectangle([left - 2, top - 1, right + 2, bottom + 1], fill=colour)
        draw.text((left, top), tag, fill=(255, 255, 255), font=face)


class _ShapeData:
    """Everything a shape's pictures draw, read once from the workspace."""

    def __init__(self, workspace: Workspace, shape_id: str, method: str | None):
        scope = shape_scope(shape_id)
        self.shape = workspace.read_record(scope, "shape", Shape)
        self.views = workspace.read_record(scope, "render", Views)
        self.teacher: Boxes | PixelMaps | None = None
        self.masks: Masks | None = None
        if workspace.exists(scope, "detect"):
            from .backproject import teacher_output

            self.teacher = teacher_output(workspace, scope)
            if isinstance(self.teacher, Boxes) and workspace.exists(scope, "sam-refine"):
                self.masks = workspace.read_record(scope, "sam-refine", Masks)
        self.method = method
        self.labelling = (workspace.read_record(scope, method, Labelling)
                          if method is not None else None)
        # one name list for every panel, so a part has one colour throughout
        self.names: list[str] = []
        for source in (self.teacher, self.labelling, self.shape):
            for name in getattr(source, "part_names", None) or []:
                if name not in self.names:
                    self.names.append(name)
        self.palette = part_palette(max(1, len(self.names)))


def _view_panels(data: _ShapeData, view: int, scale: float
                 ) -> list[tuple[str, Image.Image]]:
    """(title, picture) panels of one view."""
    from .evaluate import gt_label_images
    from .render import label_images

    views, shape, names, palette = data.views, data.shape, data.names, data.palette
    foreground = views.pixel_point[view] >= 0
    panels: list[tuple[str, Image.Image]] = []
    teacher = data.teacher
    if isinstance(teacher, Boxes):
        in_view = np.flatnonzero(teacher.view == view)
        labels = _remap(teacher.labels[in_view], teacher.part_names, names)
        base = views.rgb[view]
        title = f"teacher {teacher.teacher}: {len(in_view)} boxes"
        if data.masks is not None:
            painted = np.full(foreground.shape, -1, np.int64)
            for i in in_view[np.argsort(teacher.confidence[in_view], kind="stable")]:
                painted[data.masks.masks[i]] = _remap(teacher.labels[i:i + 1],
                                                      teacher.part_names, names)[0]
            base = _blend(base, painted, palette)
            title = f"SAM masks ({data.masks.refiner or 'SAM'}) of {len(in_view)} boxes"
        picture = _resize(base, scale)
        _draw_boxes(picture, teacher.xyxy[in_view], labels, teacher.confidence[in_view],
                    names, palette, scale)
        panels.append((title, picture))
    elif isinstance(teacher, PixelMaps):
        probs = np.asarray(teacher.probs[view], np.float32)
        best = probs.argmax(axis=-1)
        best = np.where(probs.max(axis=-1) >= PIXEL_MAP_THRESHOLD, best, -1)
        best = _remap(best, teacher.part_names, names)
        panels.append((f"teacher {teacher.teacher}: p >= {PIXEL_MAP_THRESHOLD}",
                       _resize(_blend(views.rgb[view], best, palette), scale)))
    else:
        panels.append(("render (no teacher output yet)", _resize(views.rgb[view], scale)))

    pred = gt = None
    if data.labelling is not None:
        lab = data.labelling
        face_labels = (_remap(lab.face_labels, lab.part_names, names)
                       if lab.face_labels is not None else None)
        pred = label_images(views, _remap(lab.point_labels, lab.part_names, names),
                            face_labels)[view]
        panels.append((f"prediction: {data.method}",
                       _resize(label_image(pred, foreground, palette), scale)))
    if shape.has_labels:
        single = Views(cameras=views.cameras, rgb=views.rgb[view:view + 1],
                       depth=views.depth[view:view + 1],
                       pixel_point=views.pixel_point[view:view + 1],
                       pixel_face=None if views.pixel_face is None
                       else views.pixel_face[view:view + 1])
        gt = _remap(gt_label_images(shape, single)[0], shape.part_names, names)
        panels.append(("ground truth", _resize(label_image(gt, foreground, palette), scale)))
    if pred is not None and gt is not None:
        wrong = float(((pred != gt) & (gt >= 0)).sum()) / max(1, int((gt >= 0).sum()))
        panels.append((f"errors: {100 * wrong:.0f}% of labelled pixels",
                       _resize(error_image(pred, gt, foreground), scale)))
    return panels


def _fit(text: str, face, width: int) -> str:
    """``text`` cut (with an ellipsis) to at most ``width`` pixels in ``face``."""
    if face.getlength(text) <= width:
        return text
    while text and face.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _sheet(panels: list[tuple[str, Image.Image]], key: Image.Image, caption: str
           ) -> Image.Image:
    """Panels side by side under their titles, the legend below, a caption on top."""
    from PIL import Image, ImageDraw

    face = font(TITLE_SIZE)
    bar = TITLE_SIZE + 10
    gap = 6
    width = sum(p.width for _, p in panels) + gap * (len(panels) - 1)
    height = max(p.height for _, p in panels)
    sheet = Image.new("RGB", (max(width, key.width), 2 * bar + height + key.height),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, bar // 2), caption, fill=(0, 0, 0), font=face, anchor="lm")
    x = 0
    for title, picture in panels:
        draw.text((x + 4, bar + bar // 2), _fit(title, face, picture.width - 8),
                  fill=(0, 0, 0), font=face, anchor="lm")
        sheet.paste(picture, (x, 2 * bar))
        draw.rectangle([x, 2 * bar, x + picture.width - 1, 2 * bar + picture.height - 1],
                       outline=(200, 200, 200))
        x += picture.width + gap
    sheet.paste(key, (0, 2 * bar + height))
    return sheet


def shape_sheets(workspace: Workspace, shape_id: str, method: str | None = "auto",
                 views: list[int] | None = None, max_size: int = 400
                 ) -> tuple[list[tuple[int, Image.Image]], list[str], np.ndarray, str]:
    """The debug sheets of one shape as pictures: ([(view, sheet)], part names, their
    colours (P, 3) uint8, category). Arguments as `shape_pictures`."""
    if method == "auto":
        method = default_method(workspace, shape_id)
    data = _ShapeData(workspace, shape_id, method)
    n_views = data.views.n_views
    chosen = list(range(n_views)) if views is None else views
    bad = [v for v in chosen if not 0 <= v < n_views]
    if bad:
        raise PartsegError(f"shape {shape_id}: no view {bad[0]} (it has {n_views}: "
                           f"0..{n_views - 1})")
    scale = min(1.0, max_size / max(data.views.cameras.width, data.views.cameras.height))
    sheets = []
    for view in chosen:
        panels = _view_panels(data, view, scale)
        entries = part_entries(data.names, data.palette)
        if any(title.startswith("errors") for title, _ in panels):
            entries += [(f"error: {name}", np.array(c, np.uint8)) for name, c in
                        ERROR_CLASSES if c != tuple(GREY)]
        width = sum(p.width for _, p in panels) + 6 * (len(panels) - 1)
        key = legend(entries, width)
        cameras = data.views.cameras
        angle = (f", elevation {cameras.elevations[view]:.0f}, azimuth "
                 f"{cameras.azimuths[view]:.0f}" if len(cameras.elevations) > view else "")
        caption = f"{shape_id} ({data.shape.category or 'no category'}): view {view}{angle}"
        sheets.append((view, _sheet(panels, key, caption)))
    return sheets, data.names, data.palette, data.shape.category


def shape_pictures(workspace: Workspace, shape_id: str, out_dir: Path,
                   method: str | None = "auto", views: list[int] | None = None,
                   max_size: int = 400) -> list[Path]:
    """Write the debug pictures of one shape; returns their paths in view order.

    method: the stored labelling to show ("auto": the most downstream one, None: none);
    views: which views (default all); max_size: panels larger than this many pixels are
    scaled down.
    """
    sheets, _, _, _ = shape_sheets(workspace, shape_id, method, views, max_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for view, sheet in sheets:
        path = out_dir / f"{shape_id}_view{view:02d}.png"
        with atomic_path(path) as tmp:
            sheet.save(tmp, format="PNG")
        written.append(path)
    return written

"""The trained 2D teacher: a per-category network that `partseg train-teacher` fits on
the renders of a handful of labelled shapes (`--teacher trained` / `trained-pixels`).

It sees what a VLM sees, the rendered RGB, and predicts per pixel one logit per part
name plus one for background (models/teacher2d.py). It is not open-vocabulary: it knows
the part names of the shapes it was trained on and nothing else.

- Pixel maps (`segment`): the softmax probability of each part, background dropped.
- Boxes (`detect`): the connected components (8-connectivity) of each part's predicted
  region (pixels whose most probable output is that part); a box's confidence is the
  network's mean probability of its part over the component, its part_probs the mean
  part probabilities (renormalised without background), its features the network's
  activations averaged inside the box (models.teacher2d.Teacher2D.feature_dim values).

The network runs at its training input size: each view's window (the whole view, or with
`crop` a square around the drawn pixels, `view_windows`) is resized to it (area averaging,
as in training) and its logits are resized back to the window (bilinear), so any render
resolution works. Cropping gives the object the network's whole input, so thin parts
keep more network pixels; the window comes from the RGB alone (non-white pixels), as a
detector would find the object.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import records
from .errors import ModelError, state_dict_mismatch
from .saved_model import load_model

if TYPE_CHECKING:
    import torch

KIND = "teacher2d"
MIN_COMPONENT_CELLS = 2.0  # components smaller than this many network pixels are speckle
CROP_MARGIN = 0.05  # of the object's longer side, added on each side of a crop window: the
#                     training jitter (+-10% scale, +-6% shift) then rarely cuts the object
BACKGROUND = 255  # the renders' white backdrop (render.BACKGROUND; not imported: render is heavy)


def resize_views(rgb: np.ndarray, size: int) -> torch.Tensor:
    """(V, H, W, 3) uint8 -> (V, 3, size, size) float32 in [0, 1]: area averaging when
    shrinking (what training saw), bilinear when enlarging."""
    import torch
    from torch.nn import functional as F  # noqa: N812

    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] == (size, size):
        return x
    if x.shape[-1] >= size and x.shape[-2] >= size:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def view_windows(rgb: np.ndarray, crop: bool) -> np.ndarray:
    """(V, H, W, 3) uint8 -> (V, 4) int64 [x0, y0, w, h]: the region of each view the
    network sees. Without ``crop`` the whole view; with it a square around the view's
    drawn (non-white) pixels, ``CROP_MARGIN`` larger on each side, centred on them (it may
    reach past the image border: those pixels are white background). A view with nothing
    drawn keeps the whole view."""
    n_views, height, width = rgb.shape[:3]
    whole = np.tile(np.array([0, 0, width, height], np.int64), (n_views, 1))
    if not crop:
        return whole
    drawn = (rgb < BACKGROUND).any(axis=-1)  # (V, H, W)
    rows, cols = drawn.any(axis=2), drawn.any(axis=1)
    r0, c0 = rows.argmax(axis=1), cols.argmax(axis=1)
    r1, c1 = height - rows[:, ::-1].argmax(axis=1), width - cols[:, ::-1].argmax(axis=1)
    side = np.ceil(np.maximum(r1 - r0, c1 - c0) * (1 + 2 * CROP_MARGIN)).astype(np.int64)
    x0 = np.floor((c0 + c1 - side) / 2).astype(np.int64)
    y0 = np.floor((r0 + r1 - side) / 2).astype(np.int64)
    windows = np.stack([x0, y0, side, side], axis=1)
    return np.where(rows.any(axis=1)[:, None], windows, whole)


def frame_views(rgb: np.ndarray, size: int, windows: np.ndarray) -> torch.Tensor:
    """(V, H, W, 3) uint8 and (V, 4) windows -> (V, 3, size, size) float32 in [0, 1]: each
    window cut out (white beyond the image) and resized as ``resize_views`` does."""
    import torch

    height, width = rgb.shape[1:3]
    if (windows == np.array([0, 0, width, height])).all():
        return resize_views(rgb, size)
    out = []
    for view, (x0, y0, w, h) in enumerate(windows):  # per view: windows differ in size
        cut = np.full((h, w, 3), BACKGROUND, np.uint8)
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + w, width), min(y0 + h, height)
        cut[ya - y0:yb - y0, xa - x0:xb - x0] = rgb[view, ya:yb, xa:xb]
        out.append(resize_views(cut[None], size))
    return torch.cat(out)


def window_grid(windows: np.ndarray, size: int, height: int, width: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The view pixel under each network pixel's centre: rows (V, size) and cols (V, size)
    int64 clipped into the view, and inside (V, size, size) bool (False past its border)."""
    centres = (np.arange(size) + 0.5) / size
    cols = np.floor(windows[:, 0:1] + centres[None] * windows[:, 2:3]).astype(np.int64)
    rows = np.floor(windows[:, 1:2] + centres[None] * windows[:, 3:4]).astype(np.int64)
    inside = (((rows >= 0) & (rows < height))[:, :, None]
              & ((cols >= 0) & (cols < width))[:, None, :])
    return rows.clip(0, height - 1), cols.clip(0, width - 1), inside


def box_means(integral: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Mean of a (C, S, S) map inside boxes, from its (C, S+1, S+1) integral image.

    cells: (B, 4) int [c0, r0, c1, r1) with c1 > c0, r1 > r0. Returns (B, C)."""
    c0, r0, c1, r1 = cells.T
    total = (integral[:, r1, c1] - integral[:, r0, c1] - integral[:, r1, c0]
             + integral[:, r0, c0])
    return (total / ((c1 - c0) * (r1 - r0))[None, :]).T


def component_boxes(probs: np.ndarray, min_pixels: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of the connected regions of each part in one view.

    probs: (1 + P, H, W) float32 softmax, channel 0 background. Returns (xyxy (B, 4)
    float32 pixel corners, part (B,) int, confidence (B,) mean probability of the part
    over its component, part_probs (B, P) mean part probabilities renormalised over the
    parts), components of fewer than ``min_pixels`` pixels dropped.
    """
    import cc3d
    from scipy import ndimage

    n_parts = probs.shape[0] - 1
    label = probs.argmax(axis=0).astype(np.int32)  # 0 background, 1 + p part p
    # cc3d labels each connected run of equal non-zero values: one call for every part
    comp, n_comp = cc3d.connected_components(label, connectivity=8, return_N=True)
    if n_comp == 0:
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32),
                np.zeros((0, n_parts), np.float32))
    flat = comp.ravel()
    fg = flat > 0
    cid = flat[fg].astype(np.int64) - 1
    size = np.bincount(cid, minlength=n_comp)
    part_probs = np.stack([np.bincount(cid, weights=probs[1 + p].ravel()[fg], minlength=n_comp)
                           for p in range(n_parts)], axis=1) / size[:, None]
    part = np.zeros(n_comp, np.int64)
    part[cid] = label.ravel()[fg] - 1
    confidence = part_probs[np.arange(n_comp), part]
    slices = ndimage.find_objects(comp)
    xyxy = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices],
                    np.float32)
    keep = size >= min_pixels
    norm = part_probs[keep] / np.maximum(part_probs[keep].sum(axis=1, keepdims=True), 1e-12)
    return (xyxy[keep], part[keep], confidence[keep].astype(np.float32),
            norm.astype(np.float32))


class TrainedTeacher:
    """A loaded `train-teacher` model folder, ready to segment or box rendered views."""

    def __init__(self, net: Any, part_names: list[str], input_size: int, device: torch.device,
                 path: str, key: str, training_digests: set[str], crop: bool = False):
        self.net = net.to(device).eval()
        self.part_names = list(part_names)
        self.input_size = input_size
        self.crop = crop
        self.device = device
        self.path = path
        self.key = key
        self.training_digests = training_digests

    @classmethod
    def load(cls, path: str | Path, device: torch.device) -> TrainedTeacher:
        """Read a model folder written by `partseg train-teacher`; one-line ModelError for
        a missing, foreign or corrupt folder."""
        from .models.teacher2d import Teacher2D

        saved = load_model(path, kind=KIND)
        meta = saved.meta
        try:
            part_names = [str(n) for n in meta["part_names"]]
            net = Teacher2D(len(part_names), int(meta["width"]), int(meta["levels"]))
            input_size = int(meta["input_size"])
            crop = bool(meta.get("crop", False))  # folders from before --crop: whole views
            digests = {str(s["digest"]) for s in meta.get("training_shapes", [])}
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{path}: model.json lacks the teacher's settings "
                             f"({type(err).__name__}: {err})") from None
        problem = state_dict_mismatch(net.state_dict(), saved.state_dict)
        if problem:
            raise ModelError(f"{path}: weights do not fit the teacher network ({problem})")
        net.load_state_dict(saved.state_dict)
        return cls(net, part_names, input_size, device, str(path), saved.key, digests, crop)

    def trained_on(self, digest: str | None) -> bool:
        """Whether the shape with this source digest was one the teacher learned from."""
        return digest is not None and digest in self.training_digests

    def part_order(self, part_names: list[str]) -> np.ndarray:
        """Index of each asked-for part among the model's outputs; ModelError unless the
        shapes' parts are exactly the ones the teacher was trained on."""
        if sorted(part_names) != sorted(self.part_names) or len(set(part_names)) != len(
                part_names):
            raise ModelError(f"{self.path}: the teacher was trained on parts "
                             f"{', '.join(self.part_names)}, not {', '.join(part_names)}; "
                             "train one on shapes with these parts")
        return np.array([self.part_names.index(n) for n in part_names], np.int64)

    def _forward(self, images: np.ndarray, batch_size: int
                 ) -> tuple[np.ndarray, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The views' windows (V, 4) and per batch of views: (logits (n, 1+P, S, S),
        features (n, F, S, S)) on the CPU."""
        import torch

        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be (V, H, W, 3) uint8, got {images.shape} "
                             f"{images.dtype}")
        windows = view_windows(images, self.crop)
        out = []
        step = max(1, batch_size)
        with torch.inference_mode():
            for start in range(0, len(images), step):
                x = frame_views(images[start:start + step], self.input_size,
                                windows[start:start + step])
                logits, feats = self.net.features(x.to(self.device))
                out.append((logits.float().cpu(), feats.float().cpu()))
        return windows, out

    def _view_probs(self, logits: torch.Tensor, height: int, width: int,
                    order: np.ndarray, window: np.ndarray) -> np.ndarray:
        """(1+P, S, S) logits of a view's window -> (1+P, H, W) float32 softmax, parts in
        the asked order; pixels outside the window are background."""
        import torch
        from torch.nn import functional as F  # noqa: N812

        channels = torch.from_numpy(np.concatenate([[0], 1 + order]))
        x0, y0, w, h = (int(v) for v in window)
        up = F.interpolate(logits[None, channels], size=(h, w), mode="bilinear",
                           align_corners=False)[0].softmax(dim=0).numpy()
        if (x0, y0, w, h) == (0, 0, width, height):
            return up
        probs = np.zeros((len(channels), height, width), np.float32)
        probs[0] = 1.0
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + w, width), min(y0 + h, height)
        probs[:, ya:yb, xa:xb] = up[:, ya - y0:yb - y0, xa - x0:xb - x0]
        return probs

    def segment(self, images: np.ndarray, part_names: list[str], batch_size: int = 4
                ) -> records.PixelMaps:
        """images (V, H, W, 3) uint8 -> PixelMaps.probs (V, H, W, P) float16: the softmax
        probability of each part (the background output takes the rest)."""
        order = self.part_order(part_names)
        height, width = images.shape[1:3]
        probs = np.empty((len(images), height, width, len(order)), np.float16)
        view = 0
        windows, batches = self._forward(images, batch_size)
        for logits, _ in batches:
            for one in logits:
                probs[view] = self._view_probs(one, height, width, order,
                                               windows[view])[1:].transpose(1, 2, 0)
                view += 1
        return records.PixelMaps(probs=probs, part_names=list(part_names),
                                 teacher=f"trained:{self.path}")

    def detect(self, images: np.ndarray, part_names: list[str], threshold: float = 0.1,
               batch_size: int = 4) -> records.Boxes:
        """images (V, H, W, 3) uint8 -> Boxes (XYXY pixels, by view then decreasing
        confidence): one box per connected component of a part's predicted region."""
        order = self.part_order(part_names)
        height, width = images.shape[1:3]
        size = self.input_size
        views, xyxy, confidence, part_probs, features = [], [], [], [], []
        view = 0
        windows, batches = self._forward(images, batch_size)
        for logits, feats in batches:
            for one, feat in zip(logits, feats, strict=True):
                x0, y0, w, h = windows[view]
                min_pixels = max(1, round(MIN_COMPONENT_CELLS * w * h / size ** 2))
                box, _, conf, probs = component_boxes(
                    self._view_probs(one, height, width, order, windows[view]), min_pixels)
                keep = np.flatnonzero(conf >= threshold)
                keep = keep[np.argsort(-conf[keep], kind="stable")]
                box, conf, probs = box[keep], conf[keep], probs[keep]
                # the box in network cells of its window, at least one cell wide and high
                cells = (box - np.array([x0, y0] * 2)) * np.array([size / w, size / h] * 2)
                lo = np.clip(np.floor(cells[:, :2]), 0, size - 1).astype(np.int64)
                hi = np.maximum(np.ceil(cells[:, 2:]).astype(np.int64), lo + 1).clip(max=size)
                integral = np.pad(feat.numpy().cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
                features.append(box_means(integral, np.concatenate([lo, hi], axis=1)))
                views.append(np.full(len(keep), view, np.int32))
                xyxy.append(box)
                confidence.append(conf)
                part_probs.append(probs)
                view += 1
        dim = self.net.feature_dim
        return records.Boxes(
            view=np.concatenate(views) if views else np.zeros(0, np.int32),
            xyxy=np.concatenate(xyxy).astype(np.float32) if xyxy else np.zeros((0, 4), np.float32),
            part_probs=(np.concatenate(part_probs).astype(np.float32) if part_probs
                        else np.zeros((0, len(order)), np.float32)),
            confidence=(np.concatenate(confidence).astype(np.float32) if confidence
                        else np.zeros(0, np.float32)),
            features=(np.concatenate(features).astype(np.float32).reshape(-1, dim)
                      if features else np.zeros((0, dim), np.float32)),
            part_names=list(part_names), teacher=f"trained:{self.path}")

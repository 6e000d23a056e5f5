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

The network runs at its training input size: views are resized to it (area averaging,
as in training) and its logits are resized back to the view (bilinear), so any render
resolution works.
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
                 path: str, key: str, training_digests: set[str]):
        self.net = net.to(device).eval()
        self.part_names = list(part_names)
        self.input_size = input_size
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
            digests = {str(s["digest"]) for s in meta.get("training_shapes", [])}
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{path}: model.json lacks the teacher's settings "
                             f"({type(err).__name__}: {err})") from None
        problem = state_dict_mismatch(net.state_dict(), saved.state_dict)
        if problem:
            raise ModelError(f"{path}: weights do not fit the teacher network ({problem})")
        net.load_state_dict(saved.state_dict)
        return cls(net, part_names, input_size, device, str(path), saved.key, digests)

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
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per batch of views: (logits (n, 1+P, S, S), features (n, F, S, S)) on the CPU."""
        import torch

        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be (V, H, W, 3) uint8, got {images.shape} "
                             f"{images.dtype}")
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), max(1, batch_size)):
                x = resize_views(images[start:start + max(1, batch_size)], self.input_size)
                logits, feats = self.net.features(x.to(self.device))
                out.append((logits.float().cpu(), feats.float().cpu()))
        return out

    def _view_probs(self, logits: torch.Tensor, height: int, width: int,
                    order: np.ndarray) -> np.ndarray:
        """(1+P, S, S) logits -> (1+P, H, W) float32 softmax, parts in the asked order."""
        import torch
        from torch.nn import functional as F  # noqa: N812

        channels = torch.from_numpy(np.concatenate([[0], 1 + order]))
        up = F.interpolate(logits[None, channels], size=(height, width), mode="bilinear",
                           align_corners=False)[0]
        return up.softmax(dim=0).numpy()

    def segment(self, images: np.ndarray, part_names: list[str], batch_size: int = 4
                ) -> records.PixelMaps:
        """images (V, H, W, 3) uint8 -> PixelMaps.probs (V, H, W, P) float16: the softmax
        probability of each part (the background output takes the rest)."""
        order = self.part_order(part_names)
        height, width = images.shape[1:3]
        probs = np.empty((len(images), height, width, len(order)), np.float16)
        view = 0
        for logits, _ in self._forward(images, batch_size):
            for one in logits:
                probs[view] = self._view_probs(one, height, width, order)[1:].transpose(1, 2, 0)
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
        min_pixels = max(1, round(MIN_COMPONENT_CELLS * height * width / size ** 2))
        views, xyxy, confidence, part_probs, features = [], [], [], [], []
        view = 0
        for logits, feats in self._forward(images, batch_size):
            for one, feat in zip(logits, feats, strict=True):
                box, _, conf, probs = component_boxes(
                    self._view_probs(one, height, width, order), min_pixels)
                keep = np.flatnonzero(conf >= threshold)
                keep = keep[np.argsort(-conf[keep], kind="stable")]
                box, conf, probs = box[keep], conf[keep], probs[keep]
                # the box in network cells, at least one cell wide and high
                scale = np.array([size / width, size / height] * 2)
                cells = box * scale
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

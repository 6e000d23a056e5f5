"""PartDistill's student network: a point encoder and the distillation head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from ..orientation import Aligner

# Points per chunk when predicting a whole shape (bounds activation memory).
_PREDICT_CHUNK = 65536


class PointCloudLike(Protocol):
    """Anything with points/normals/colors, e.g. records.Shape."""

    points: np.ndarray  # (N, 3) float32, normalised frame
    normals: np.ndarray  # (N, 3) float32
    colors: np.ndarray  # (N, 3) float32 in [0, 1]


class Head(nn.Module):
    """4-layer MLP (by default) on standardised features: (S, D) -> logits (S, P)."""

    def __init__(self, in_dim: int, n_parts: int, hidden: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.ReLU()]
            prev = width
        layers.append(nn.Linear(prev, n_parts))
        self.mlp = nn.Sequential(*layers)
        # Frozen features have very different scales per channel; standardise them
        # with statistics of the training points (set by `set_normalisation`).
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))

    def set_normalisation(self, feats: torch.Tensor) -> None:
        """Per-channel mean/std of feats (S, D), std floored at 1e-3."""
        f = feats.double()
        self.mean.copy_(f.mean(0).to(self.mean.dtype))
        self.std.copy_(f.std(0).clamp(min=1e-3).to(self.std.dtype))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.mlp((feats.float() - self.mean) / self.std)


class Student(nn.Module):
    """Point encoder (+ per-shape standardisation of frozen features) + distillation head."""

    def __init__(self, encoder: nn.Module, head: Head, shape_standardise: bool = False):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.shape_standardise = shape_standardise
        # orientation.Aligner of a student trained with align="axes" (not a module
        # buffer: saved apart, as "align.reference"); `distill.apply_student` rotates
        # shapes with it, `predict` takes shapes as they are
        self.aligner: Aligner | None = None

    @property
    def device(self) -> torch.device:
        return self.head.mean.device

    def encode(self, points: torch.Tensor, normals: torch.Tensor,
               colors: torch.Tensor) -> torch.Tensor:
        """(N, 3) tensors -> features (N, D). An encoder whose neighbourhoods depend on
        density (``encode_shape``) is run on subsets of the size it trained on."""
        if hasattr(self.encoder, "encode_shape"):
            return self.encoder.encode_shape(points, normals, colors)
        feats = self.encoder(points[None], normals[None], colors[None])[0]
        if self.shape_standardise and not self.encoder.trainable:
            feats = (feats - feats.mean(0)) / feats.std(0).clamp(min=1e-3)
        return feats

    @torch.no_grad()
    def predict(self, shape: PointCloudLike) -> np.ndarray:
        """Part probabilities (N, P) float32 for every point of ``shape``."""
        self.eval()
        pts, nrm, col = point_tensors(shape, self.device)
        feats = self.encode(pts, nrm, col)
        probs = [F.softmax(self.head(feats[i:i + _PREDICT_CHUNK]), dim=-1)
                 for i in range(0, feats.shape[0], _PREDICT_CHUNK)]
        return torch.cat(probs).cpu().numpy().astype(np.float32)


def point_tensors(shape: PointCloudLike, device: torch.device | str
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.as_tensor(np.asarray(a, np.float32), device=device)
                 for a in (shape.points, shape.normals, shape.colors))

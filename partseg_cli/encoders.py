"""Point encoders for the PartDistill student: points in, one feature vector per point out.

The paper's student uses a frozen, self-supervised Point-M2AE; its weights cannot be
downloaded here, so the default encoder needs no weights at all:

- ``pointnn``: a training-free multi-scale geometric encoder in the spirit of Point-NN
  (Zhang et al., "Parameter is not all you need", CVPR 2023). Farthest point sampling
  and kNN grouping at several scales, trigonometric positional encodings of relative
  coordinates, max + mean pooling, and every scale propagated back to every input
  point by inverse-distance interpolation. Deterministic; frozen by construction.
- ``pointnet``: a small learnable PointNet (shared per-point MLP + global max pool),
  trained from scratch together with the distillation head, or loaded frozen from a
  user's checkpoint.

Every encoder maps points (B, N, 3) float32 [+ normals (B, N, 3), colors (B, N, 3)] in
the normalised shape frame to features (B, N, D) float32, exposes ``out_dim`` (D) and
``trainable`` (whether the head's optimiser should update it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ModelError, state_dict_mismatch
from .saved_model import load_state_dict_file


def positional_encoding(xyz: torch.Tensor, dim: int, max_freq: float = 8.0) -> torch.Tensor:
    """Trigonometric encoding of coordinates.

    xyz: (..., 3) roughly in [-1, 1]. Returns (..., dim): for each of ceil(dim / 6)
    frequencies w_j = pi * max_freq^(j / F) (geometric from pi to pi * max_freq), the
    sin and cos of w_j * x, w_j * y, w_j * z, truncated to ``dim`` channels.
    """
    n_freqs = max(1, math.ceil(dim / 6))
    freqs = math.pi * max_freq ** (torch.arange(n_freqs, device=xyz.device,
                                                 dtype=xyz.dtype) / n_freqs)
    angles = xyz[..., :, None] * freqs  # (..., 3, F)
    enc = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (..., 3, 2F)
    return enc.flatten(-2)[..., :dim]


def farthest_point_sample(xyz: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Farthest point sampling, deterministic.

    xyz: (B, M, 3). Returns (B, S) int64 indices, S = min(n_samples, M). Starts from
    the point farthest from the centroid, so the result does not depend on point order
    except for ties. The loop over the S samples is inherent to FPS; each iteration is
    vectorised over the M points in numpy, whose per-call cost is a fraction of torch's
    (512 of 10k points: 7 ms against 60 ms), in float32 and summing x, y, z in the same
    order as before, so the picks are the same.
    """
    b, m, _ = xyz.shape
    s = min(n_samples, m)
    centred = xyz - xyz.mean(dim=1, keepdim=True)
    start = centred.square().sum(-1).argmax(dim=1).cpu().numpy()  # (B,)
    coords = xyz.detach().cpu().numpy().astype(np.float32, copy=False)
    chosen = np.stack([_fps_row(np.ascontiguousarray(coords[row].T), s, int(start[row]))
                       for row in range(b)])
    return torch.from_numpy(chosen).to(xyz.device)


def _fps_row(coords: np.ndarray, s: int, current: int) -> np.ndarray:
    """FPS of one cloud, coords (3, M) float32 from index ``current``: (s,) int64."""
    chosen = np.empty(s, np.int64)
    min_dist = np.full(coords.shape[1], np.inf, np.float32)
    dist = np.empty_like(min_dist)
    axis = np.empty_like(min_dist)
    for i in range(s):
        chosen[i] = current
        np.subtract(coords[0], coords[0, current], out=dist)
        np.multiply(dist, dist, out=dist)
        for c in (1, 2):
            np.subtract(coords[c], coords[c, current], out=axis)
            dist += np.multiply(axis, axis, out=axis)
        np.minimum(min_dist, dist, out=min_dist)
        current = int(min_dist.argmax())
    return chosen


def knn(query: torch.Tensor, ref: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest reference points of each query point.

    query: (B, Q, 3), ref: (B, M, 3). Returns (distances (B, Q, k) float, indices
    (B, Q, k) int64), nearest first; k is capped at M. The indices come from a k-d tree
    per cloud (scipy's cKDTree, exact): 3-5x faster than a chunked distance matrix and
    its top-k, with no Q x M matrix in memory. The distances are recomputed from the
    gathered points in torch, exactly (cdist's matrix-product form loses ~1e-4 here).
    """
    from scipy.spatial import cKDTree

    b, q = query.shape[:2]
    k = min(k, ref.shape[1])
    queries = query.detach().cpu().numpy()
    refs = ref.detach().cpu().numpy()
    idx = np.stack([cKDTree(refs[row]).query(queries[row], k)[1].reshape(q, k)
                    for row in range(b)]).astype(np.int64)
    idx_t = torch.from_numpy(idx).to(query.device)
    dist = (gather(ref, idx_t) - query[:, :, None]).square().sum(-1).sqrt()
    return dist, idx_t


def gather(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """values (B, M, C) gathered at idx (B, ...) int64 -> (B, ..., C).

    Whole rows are copied (index_select on the flattened batch): the same values as
    torch.gather with an index expanded over C, 4-10x faster.
    """
    b, m, c = values.shape
    offsets = torch.arange(b, device=idx.device)[:, None] * m
    flat = (idx.reshape(b, -1) + offsets).reshape(-1)
    return values.reshape(b * m, c).index_select(0, flat).reshape(*idx.shape, c)


def interpolate(xyz: torch.Tensor, centres: torch.Tensor, feats: torch.Tensor,
                k: int = 3) -> torch.Tensor:
    """Propagate centre features to points by inverse-distance weighting (PointNet++ FP).

    xyz: (B, N, 3) target points; centres: (B, S, 3); feats: (B, S, C).
    Returns (B, N, C): sum_i w_i f_i over the k nearest centres, w_i ~ 1 / (d_i + 1e-8).
    """
    dist, idx = knn(xyz, centres, k)
    weights = 1.0 / (dist + 1e-8)
    weights = weights / weights.sum(-1, keepdim=True)
    # One neighbour at a time: no (B, N, k, C) intermediate, 4-6x faster for 10k points.
    out = gather(feats, idx[..., 0]) * weights[..., :1]
    for j in range(1, idx.shape[-1]):
        out.addcmul_(gather(feats, idx[..., j]), weights[..., j:j + 1])
    return out


def _point_inputs(points: torch.Tensor, normals: torch.Tensor | None,
                  colors: torch.Tensor | None, pe_dim: int) -> torch.Tensor:
    """Per-point input channels: PosE(xyz) (pe_dim) ++ normals (3) ++ colors (3).

    Missing normals/colors are zeros so that every shape has the same channel layout.
    """
    zeros = torch.zeros_like(points)
    return torch.cat([positional_encoding(points, pe_dim),
                      normals if normals is not None else zeros,
                      colors if colors is not None else zeros], dim=-1)


class PointNNEncoder(nn.Module):
    """Training-free multi-scale encoder (Point-NN style). No parameters.

    Level 0 is every input point with C0 = pe_dim + 6 channels (PosE of xyz, normal,
    colour). Stage s samples ``centres[s]`` points of the previous level by FPS,
    groups each centre's k nearest previous-level points (k = 2 x the sampling ratio,
    clamped to [k_min, k_max], so neighbourhoods tile the previous level), and for each
    neighbour forms [f_j - f_c, f_c] (2C channels), adds and multiplies by a PosE of
    the neighbour's offset (normalised by the group's radius), then max + mean pools:
    the channel count doubles per stage. Each stage is interpolated back to all input
    points; the output concatenates level 0 and all stages:
    D = C0 * (1 + 2 + 4 + ...) = C0 * (2^(S+1) - 1); 24 * 15 = 360 by default.
    """

    trainable = False

    def __init__(self, pe_dim: int = 18, centres: tuple[int, ...] = (512, 128, 32),
                 k_min: int = 16, k_max: int = 48):
        super().__init__()
        self.pe_dim = pe_dim
        self.centres = tuple(centres)
        self.k_min = k_min
        self.k_max = k_max
        in_dim = pe_dim + 6
        self.out_dim = in_dim * (2 ** (len(self.centres) + 1) - 1)

    def forward(self, points: torch.Tensor, normals: torch.Tensor | None = None,
                colors: torch.Tensor | None = None) -> torch.Tensor:
        """points (B, N, 3) [+ normals, colors (B, N, 3)] -> features (B, N, out_dim)."""
        feats = _point_inputs(points, normals, colors, self.pe_dim)
        outputs = [feats]
        xyz = points
        for n_centres in self.centres:
            centre_idx = farthest_point_sample(xyz, n_centres)
            cxyz = gather(xyz, centre_idx)  # (B, S, 3)
            cfeat = gather(feats, centre_idx)  # (B, S, C)
            ratio = math.ceil(xyz.shape[1] / cxyz.shape[1])
            k = min(max(self.k_min, 2 * ratio), self.k_max)
            _, nbr = knn(cxyz, xyz, k)  # (B, S, k)
            offsets = gather(xyz, nbr) - cxyz[:, :, None]  # (B, S, k, 3)
            radius = offsets.norm(dim=-1).amax(dim=-1, keepdim=True)[..., None]
            offsets = offsets / (radius + 1e-8)
            nfeat = gather(feats, nbr)  # (B, S, k, C)
            grouped = torch.cat([nfeat - cfeat[:, :, None],
                                 cfeat[:, :, None].expand_as(nfeat)], dim=-1)
            pe = positional_encoding(offsets, grouped.shape[-1])
            # Point-NN's geometry extraction: the encoding both shifts and gates the
            # features, so pooled responses depend on where each neighbour sits.
            grouped = (grouped + pe) * pe
            feats = grouped.amax(dim=2) + grouped.mean(dim=2)  # (B, S, 2C)
            xyz = cxyz
            outputs.append(interpolate(points, cxyz, feats))
        return torch.cat(outputs, dim=-1)


class PointNetEncoder(nn.Module):
    """Small learnable PointNet: per-point MLP, then [local, global max] per point.

    Input channels as `PointNNEncoder` level 0; output D = 2 * width[-1] (256).
    """

    trainable = True

    def __init__(self, pe_dim: int = 18, width: tuple[int, ...] = (64, 128)):
        super().__init__()
        self.pe_dim = pe_dim
        layers: list[nn.Module] = []
        prev = pe_dim + 6
        for w in width:
            layers += [nn.Linear(prev, w), nn.ReLU()]
            prev = w
        self.mlp = nn.Sequential(*layers)
        self.out_dim = 2 * prev

    def forward(self, points: torch.Tensor, normals: torch.Tensor | None = None,
                colors: torch.Tensor | None = None) -> torch.Tensor:
        """points (B, N, 3) [+ normals, colors (B, N, 3)] -> features (B, N, out_dim)."""
        local = self.mlp(_point_inputs(points, normals, colors, self.pe_dim))
        glob = local.amax(dim=1, keepdim=True).expand_as(local)
        return torch.cat([local, glob], dim=-1)


def _dgcnn() -> nn.Module:
    from .models.dgcnn import DGCNNEncoder

    return DGCNNEncoder()


ENCODERS: dict[str, Callable[[], nn.Module]] = {
    "pointnn": PointNNEncoder,
    "pointnet": PointNetEncoder,
    "dgcnn": _dgcnn,
}


def load_state(module: nn.Module, checkpoint: str | Path, device: str) -> None:
    """Load a user's state_dict into ``module``, naming every mismatch.

    Accepts a file holding a state_dict or a dict with a "state_dict" /
    "model_state_dict" entry. Raises ModelError when the file is missing or unreadable,
    or when keys are missing/unexpected or tensor shapes differ.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise ModelError(f"{path}: encoder checkpoint not found (pass the path of a saved "
                         "state_dict, or omit the checkpoint to use untrained weights)")
    state = load_state_dict_file(path, "an encoder checkpoint", device)
    problem = state_dict_mismatch(module.state_dict(), state)
    if problem:
        raise ModelError(f"{path}: does not match the {type(module).__name__} encoder: "
                         f"{problem}")
    module.load_state_dict(state)


def build_encoder(name: str, checkpoint: str | None = None, device: str = "cpu") -> nn.Module:
    """The encoder registered under ``name``, on ``device``, in eval mode.

    With a checkpoint the weights are loaded (`load_state`) and the encoder is frozen
    (``trainable = False``), as the paper freezes its pre-trained Point-M2AE; without
    one, a parameterised encoder is trained from scratch with the head.
    """
    if name not in ENCODERS:
        raise ModelError(f"unknown encoder '{name}' (choose from {', '.join(ENCODERS)})")
    encoder = ENCODERS[name]()
    encoder.to(device)
    if checkpoint is not None:
        load_state(encoder, checkpoint, device)
        encoder.trainable = False
    if not encoder.trainable:
        encoder.requires_grad_(False)
    return encoder.eval()

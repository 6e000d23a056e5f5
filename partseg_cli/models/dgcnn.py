"""A learnable DGCNN-style point encoder (EdgeConv, Wang et al. 2019) for the student.

PartDistill's Table 5 row (7) trains its point encoder from scratch together with the
distillation head instead of freezing a pre-trained one; this is that option for
partseg, small enough to train on a CPU. Each EdgeConv layer applies a shared linear
map to every edge [f_i, f_j - f_i] of the k-nearest-neighbour graph, max-pools over the
k neighbours and normalises (`EdgeConv`); the output concatenates every layer's
features and their global max over the shape (per point, D = 2 * sum(widths)). Every
layer uses the graph in xyz (DGCNN's first, static one): DGCNN's dynamic graph, rebuilt
in feature space per layer, tripled the cost of a step on this CPU. As in the
reference's data loader, a training shape is a fixed subset of points, so its graph is
built once.

Neighbourhoods depend on point density, so the encoder always sees ``points_per_pass``
points at a time: training uses a fixed subset of that many per shape, and `encode_shape`
splits a larger shape into random, equal-density subsets of about that size (a fixed
permutation: deterministic).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..encoders import _point_inputs, gather, knn


class EdgeConv(nn.Module):
    """(B, N, C) features + (B, N, k) neighbour indices -> (B, N, out).

    DGCNN's edge function h([f_i, f_j - f_i]) = W1 f_i + W2 (f_j - f_i), max over j, is
    computed as (W1 - W2) f_i + max_j W2 f_j: the linear map runs once per point, not
    once per edge (k times less work and memory), and since LeakyReLU is monotonic it
    commutes with the max. The normalisation (LayerNorm, per point) follows the max
    instead of DGCNN's BatchNorm on edges, which has no per-point equivalent.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.centre = nn.Linear(in_dim, out_dim)  # W1 - W2, with the bias
        self.neighbour = nn.Linear(in_dim, out_dim, bias=False)  # W2
        self.norm = nn.LayerNorm(out_dim)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, feats: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        pooled = gather(self.neighbour(feats), neighbours).amax(dim=2)  # (B, N, out)
        return self.norm(self.act(self.centre(feats) + pooled))


class DGCNNEncoder(nn.Module):
    """Learnable EdgeConv encoder: points (B, N, 3) [+ normals, colors] -> (B, N, D)."""

    trainable = True

    def __init__(self, pe_dim: int = 18, widths: tuple[int, ...] = (64, 64, 64), k: int = 16,
                 points_per_pass: int = 2048):
        super().__init__()
        self.pe_dim = pe_dim
        self.k = k
        self.points_per_pass = points_per_pass
        dims = [pe_dim + 6, *widths]
        self.layers = nn.ModuleList(EdgeConv(a, b) for a, b in zip(dims[:-1], dims[1:],
                                                                    strict=True))
        self.out_dim = 2 * sum(widths)

    def neighbours(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, N, k) int64: each point's k nearest points (itself first)."""
        return knn(points, points, self.k)[1]

    def forward(self, points: torch.Tensor, normals: torch.Tensor | None = None,
                colors: torch.Tensor | None = None,
                neighbours: torch.Tensor | None = None) -> torch.Tensor:
        """points (B, N, 3) [+ normals, colors (B, N, 3)] -> (B, N, out_dim); the kNN
        graph of ``points`` is built unless given (``neighbours``, (B, N, k))."""
        feats = _point_inputs(points, normals, colors, self.pe_dim)
        graph = self.neighbours(points) if neighbours is None else neighbours
        outputs = []
        for layer in self.layers:
            feats = layer(feats, graph)
            outputs.append(feats)
        local = torch.cat(outputs, dim=-1)
        return torch.cat([local, local.amax(dim=1, keepdim=True).expand_as(local)], dim=-1)

    def encode_shape(self, points: torch.Tensor, normals: torch.Tensor,
                     colors: torch.Tensor) -> torch.Tensor:
        """(N, 3) tensors -> (N, D), in random subsets of about ``points_per_pass``."""
        n = points.shape[0]
        passes = max(1, math.ceil(n / self.points_per_pass))
        if passes == 1:
            return self(points[None], normals[None], colors[None])[0]
        generator = torch.Generator().manual_seed(0)
        order = torch.randperm(n, generator=generator).to(points.device)
        out = torch.empty(n, self.out_dim, device=points.device)
        for chunk in order.tensor_split(passes):
            out[chunk] = self(points[chunk][None], normals[chunk][None], colors[chunk][None])[0]
        return out

"""Point Transformer blocks and the BiPart part-segmentation network (BiPart Sec. 3.2).

BiPart's network is f(S, pi, theta, phi) (Eq. 1): a frozen point encoder (pi, in
``encoders.py``), a category-agnostic feature extractor (theta) of two Point Transformer
blocks (Zhao et al., ICCV 2021) on the encoder's features concatenated with xyz, and a
category-specific two-layer MLP head (phi) whose outputs are the largest part count of
the training categories; a category's parts map onto its first outputs.

The modules here take precomputed frozen features: the encoder never changes, so a
caller encodes each shape once. Neighbourhoods (16-NN indices) depend on the points only
and are passed in, so they are found once per shape too.
"""

from __future__ import annotations

import torch
from torch import nn

from ..encoders import gather, knn


def neighbours(xyz: torch.Tensor, k: int = 16) -> torch.Tensor:
    """(N, 3) points -> (N, k) int64 indices of each point's k nearest points (itself
    first), k capped at N."""
    return knn(xyz[None], xyz[None], k)[1][0]


class PointTransformerLayer(nn.Module):
    """Vector self-attention over each point's k neighbours (Point Transformer Eq. 3).

    y_i = sum_j softmax_j(gamma(phi(x_i) - psi(x_j) + delta_ij)) * (alpha(x_j) + delta_ij)
    with delta_ij = theta(p_i - p_j) a learned relative position encoding (two linear
    layers), gamma an MLP, the softmax over the k neighbours per channel.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.position = nn.Sequential(nn.Linear(3, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.attention = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, xyz: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
        """x (N, C), xyz (N, 3), nbr (N, k) -> (N, C)."""
        q = self.query(x)  # (N, C)
        k = gather(self.key(x)[None], nbr[None])[0]  # (N, k, C)
        v = gather(self.value(x)[None], nbr[None])[0]
        rel = xyz[:, None, :] - gather(xyz[None], nbr[None])[0]  # (N, k, 3) p_i - p_j
        delta = self.position(rel)
        weights = torch.softmax(self.attention(q[:, None, :] - k + delta), dim=1)
        return (weights * (v + delta)).sum(dim=1)


class PointTransformerBlock(nn.Module):
    """Point Transformer block: linear -> attention layer -> linear with a residual, then
    a pointwise MLP with a residual; layer norms before each (pre-norm), which keeps a
    small-batch bi-level training stable without batch statistics."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 2 * dim
        self.norm1 = nn.LayerNorm(dim)
        self.linear_in = nn.Linear(dim, dim)
        self.attention = PointTransformerLayer(dim)
        self.linear_out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, xyz: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
        x = x + self.linear_out(self.attention(self.linear_in(self.norm1(x)), xyz, nbr))
        return x + self.mlp(self.norm2(x))


class FeatureExtractor(nn.Module):
    """BiPart's category-agnostic extractor (theta): [frozen features, xyz] -> a linear
    projection -> ``n_blocks`` Point Transformer blocks -> (N, dim).

    With ``n_blocks=0`` it is only the projection: Table 3's variants without the
    extractor ("the frozen point cloud encoder directly connected with a trainable
    segmentation head"), kept as a linear map so that the head has the same input width.
    """

    def __init__(self, in_dim: int, dim: int = 96, n_blocks: int = 2):
        super().__init__()
        self.in_dim = in_dim
        self.dim = dim
        self.project = nn.Linear(in_dim + 3, dim)
        self.blocks = nn.ModuleList(PointTransformerBlock(dim) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(dim)

    def forward(self, feats: torch.Tensor, xyz: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
        """feats (N, in_dim) frozen (standardised) features, xyz (N, 3), nbr (N, k)."""
        x = self.project(torch.cat([feats, xyz], dim=-1))
        for block in self.blocks:
            x = block(x, xyz, nbr)
        return self.norm(x)


class SegmentationHead(nn.Module):
    """BiPart's category-specific head (phi): a two-layer MLP, (N, dim) -> (N, n_outputs)."""

    def __init__(self, dim: int, n_outputs: int, hidden: int = 128):
        super().__init__()
        self.n_outputs = n_outputs
        self.hidden = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


class BiPartNet(nn.Module):
    """Extractor + head; the frozen encoder stays outside (its features are inputs)."""

    def __init__(self, in_dim: int, n_outputs: int, dim: int = 96, n_blocks: int = 2,
                 head_hidden: int = 128):
        super().__init__()
        self.extractor = FeatureExtractor(in_dim, dim, n_blocks)
        self.head = SegmentationHead(dim, n_outputs, head_hidden)

    def forward(self, feats: torch.Tensor, xyz: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
        return self.head(self.extractor(feats, xyz, nbr))

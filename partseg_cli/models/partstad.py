"""PartSTAD's box weight network (Kim & Sung, ECCV 2024, Sec. 4.2).

One weight per 2D box (or the SAM mask refined from it), predicted from the detector's
box feature and a positional encoding of where the box is: the view direction and the
box corners normalised by the image size. All boxes of all views of one shape go
through the network together, because context normalisation between its two layers
standardises every channel over that set of boxes (Yi et al. 2018): a box's weight
depends on the other boxes of its shape.

    h = x + relu(CN(W1 x + b1))          CN: per channel, minus mean, over std (boxes)
    w = relu(offset + W2 h + b2)         offset 10 (Eq. 7)
    null score = relu(s0), s0 learnable, initialised at 10

The skip connection and the near-zero initialisation (normal, std 1e-4, zero biases:
every weight starts at the offset, i.e. plain voting) follow the reference code.
"""

from __future__ import annotations

import torch
from torch import nn

GEOMETRY_DIM = 7  # view direction (3) + normalised box corners x0, y0, x1, y1 (4)


def positional_encoding(x: torch.Tensor, n_frequencies: int = 10) -> torch.Tensor:
    """NeRF positional encoding with the input kept: [x, sin(2^k x), cos(2^k x)] for
    k = 0 .. n_frequencies - 1. x: (B, C). Returns (B, C * (1 + 2 n_frequencies))."""
    bands = 2.0 ** torch.arange(n_frequencies, dtype=x.dtype, device=x.device)
    scaled = x[:, None, :] * bands[:, None]  # (B, F, C)
    # Frequency-major like the reference: per band, sin of every channel, then cos.
    periodic = torch.stack([torch.sin(scaled), torch.cos(scaled)], dim=2)  # (B, F, 2, C)
    return torch.cat([x, periodic.reshape(x.shape[0], -1)], dim=1)


def encoding_dim(n_frequencies: int, channels: int = GEOMETRY_DIM) -> int:
    return channels * (1 + 2 * n_frequencies)


def context_normalise(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Standardise each channel over the set of boxes (dim 0): (x - mean) / std."""
    mean = x.mean(dim=0, keepdim=True)
    std = x.std(dim=0, keepdim=True, correction=0)
    return (x - mean) / (std + eps)


class BoxWeightNet(nn.Module):
    """Weights W(b) >= 0 for the boxes of one shape, and the learnable null score."""

    def __init__(self, feature_dim: int, n_frequencies: int = 10, offset: float = 10.0,
                 null_init: float = 10.0, positional: bool = True):
        super().__init__()
        self.feature_dim = feature_dim
        self.n_frequencies = n_frequencies
        self.offset = offset
        self.positional = positional
        in_dim = feature_dim + (encoding_dim(n_frequencies) if positional else 0)
        self.layer_in = nn.Linear(in_dim, in_dim)
        self.layer_out = nn.Linear(in_dim, 1)
        for layer in (self.layer_in, self.layer_out):
            nn.init.normal_(layer.weight, std=1e-4)
            nn.init.zeros_(layer.bias)
        self.null_score = nn.Parameter(torch.tensor([float(null_init)]))

    def inputs(self, features: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        """(B, D) features and (B, 7) geometry -> (B, in_dim) network input."""
        if not self.positional:
            return features
        return torch.cat([features, positional_encoding(geometry, self.n_frequencies)], 1)

    def forward(self, features: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        """features (B, D) float, geometry (B, 7) float. Returns (B,) box weights >= 0."""
        x = self.inputs(features, geometry)
        if x.shape[0] == 0:
            return x.new_zeros(0)
        h = x + torch.relu(context_normalise(self.layer_in(x)))
        return torch.relu(self.offset + self.layer_out(h)[:, 0])

    def null(self) -> torch.Tensor:
        """() the null label's unnormalised score, relu(s0)."""
        return torch.relu(self.null_score[0])

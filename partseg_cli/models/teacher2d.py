"""The trained 2D teacher's network: a small U-Net from rendered RGB to part logits.

Input (n, 3, S, S) float RGB in [0, 1]; output logits (n, 1 + P, S, S): channel 0 is
background (the renders' white backdrop, so that "no part" has an output of its own and
the part probabilities need not explain background pixels), channels 1..P the parts.
`features` also returns the activations of the bottleneck and of every decoder level,
upsampled to (n, F, S, S) and stacked: the teacher pools them inside each box as the
box's feature vector (F = `feature_dim`, 88 for width 8 and 3 levels).

GroupNorm rather than BatchNorm: training batches are a handful of views, and the same
normalisation runs in training and inference.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (the usual torch alias)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    groups = max(1, c_out // 8)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(groups, c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.GroupNorm(groups, c_out),
        nn.ReLU(inplace=True))


class Teacher2D(nn.Module):
    """U-Net with `levels` poolings; widths w, 2w, 4w, ... capped at the bottleneck 4w."""

    def __init__(self, n_parts: int, width: int = 16, levels: int = 3):
        super().__init__()
        if n_parts < 1 or width < 1 or levels < 1:
            raise ValueError(f"bad Teacher2D size: n_parts={n_parts}, width={width}, "
                             f"levels={levels}")
        self.n_parts, self.width, self.levels = n_parts, width, levels
        widths = [width * min(2 ** i, 4) for i in range(levels + 1)]
        self.down = nn.ModuleList([_block(3, widths[0])] + [
            _block(widths[i], widths[i + 1]) for i in range(levels)])
        self.up = nn.ModuleList([_block(widths[i + 1] + widths[i], widths[i])
                                 for i in reversed(range(levels))])
        self.head = nn.Conv2d(widths[0], 1 + n_parts, 1)
        self.feature_dim = widths[-1] + sum(widths[:-1])

    @staticmethod
    def normalise(rgb: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) in [0, 1] -> zero-centred input."""
        return (rgb - 0.5) / 0.25

    def _run(self, rgb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """rgb (n, 3, S, S) in [0, 1] -> (logits (n, 1+P, S, S), [bottleneck, decoder
        levels coarse to fine] at their own resolutions)."""
        x = self.normalise(rgb)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        levels = [x]
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
            levels.append(x)
        return self.head(x), levels

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb (n, 3, S, S) in [0, 1], S divisible by 2**levels -> logits (n, 1+P, S, S)."""
        return self._run(rgb)[0]

    def features(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (n, 1+P, S, S), features (n, feature_dim, S, S))."""
        logits, levels = self._run(rgb)
        size = rgb.shape[-2:]
        feats = torch.cat([F.interpolate(level, size=size, mode="bilinear",
                                         align_corners=False) for level in levels], dim=1)
        return logits, feats

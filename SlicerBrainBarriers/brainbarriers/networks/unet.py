"""Coarse localisation network: a 3D U-Net in nnU-Net style.

Each level is two conv-InstanceNorm-LeakyReLU units; down-sampling is the first conv of a level
with stride 2, up-sampling a transposed conv with stride 2. Widths double per level from
``base_width`` up to ``max_width``. Deep-supervision 1x1x1 heads on the decoder levels at 1/2,
1/4, 1/8 resolution are evaluated in training mode only.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvUnit, as_float32


class CoarseUNet(nn.Module):
    """nnU-Net-style 3D U-Net.

    Args:
        in_channels: input channels.
        out_channels: output classes (COARSE_CHANNELS for the coarse stage).
        levels: number of resolution levels (default 5; needs >= 4 for three deep-supervision outputs).
        base_width: width of the first level (default 32).
        max_width: cap on widths (default 320).
        activation: "leaky_relu" (nnU-Net) or "relu".
        deep_supervision: return [full, 1/2, 1/4, 1/8] logits in training mode.
    """

    def __init__(self, in_channels: int, out_channels: int, levels: int = 5, base_width: int = 32,
                 max_width: int = 320, activation: str = "leaky_relu", deep_supervision: bool = True):
        super().__init__()
        if levels < 2:
            raise ValueError("levels must be at least 2")
        widths = [min(base_width * 2**i, max_width) for i in range(levels)]
        self.deep_supervision = deep_supervision
        self.required_multiple = (2 ** (levels - 1),) * 3
        self.encoder = nn.ModuleList()
        cin = in_channels
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.encoder.append(nn.Sequential(ConvUnit(cin, w, (3, 3, 3), activation, stride),
                                              ConvUnit(w, w, (3, 3, 3), activation)))
            cin = w
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.heads = nn.ModuleList()
        for i in range(levels - 2, -1, -1):  # decoder from deepest-1 to full resolution
            self.ups.append(nn.ConvTranspose3d(widths[i + 1], widths[i], 2, stride=2))
            self.decoder.append(nn.Sequential(ConvUnit(2 * widths[i], widths[i], (3, 3, 3), activation),
                                              ConvUnit(widths[i], widths[i], (3, 3, 3), activation)))
            self.heads.append(nn.Conv3d(widths[i], out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for enc in self.encoder:
            x = enc(x)
            skips.append(x)
        skips.pop()
        train_ds = self.training and self.deep_supervision
        outs = []
        for i, (up, dec, head) in enumerate(zip(self.ups, self.decoder, self.heads)):
            x = dec(torch.cat([up(x), skips.pop()], 1))
            if train_ds or i == len(self.heads) - 1:
                outs.append(head(x))
        if train_ds:
            # heads run coarse -> fine; return [full, 1/2, 1/4, 1/8]
            return outs[::-1][:4]
        return as_float32(outs[-1])

"""HMEDN (Zhou et al., IEEE TIP): high-resolution multi-scale encoder-decoder network, 3D version.

Three pathways (paper, Fig. 2):

* Distilling pathway: a U-Net with four max-poolings and four transposed-conv up-samplings whose
  building block is a dense block (each conv unit sees the block input and every earlier unit's
  output; a 1x1x1 transition brings the concatenation to the stage width). Widths 16, 32, 64, 128,
  256 (the paper's 3D setting). HED-style side outputs: 1x1x1 heads on the decoder stages at 1/8,
  1/4 and 1/2, up-sampled and merged with the last decoder features before the final head; they are
  also the deep-supervision outputs.
* Skip pathway: the usual encoder-to-decoder concatenations.
* High-resolution pathway on stage ``hr_stage`` (paper's best 3D setting: the second stage, L = 32
  channels): nine residual dilated conv blocks (two dilated 3x3x3 conv units and a shortcut) with
  dense connections to its end (a 1x1x1 conv over all nine block outputs), deeply supervised by its
  own 1x1x1 head, and fed into the decoder stage of the same resolution.

A contour-regression head (1x1x1 conv, one channel, sigmoid in the loss) sits on the final features.

Choices where the paper is silent: dense blocks of ``dense_layers`` = 2 units of growth
``width // 2`` each; dilations (1, 2, 3, 5, 1, 2, 3, 5, 1) along the high-resolution pathway
(the paper's dilated baselines use factors 2-5). With these, 4.18 M parameters (4 inputs, 4 classes) (paper, 3D
Proposed-L2: 4.39 M; docs/networks.md). Training-mode outputs: ``[full, 1/2, 1/4, 1/8]`` side
outputs plus ``aux = {"hr": logits of the high-resolution pathway, "contour": contour logits}``.
The difficulty-guided cross-entropy and the contour target are in brainbarriers_training.losses_zoo.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import DilatedUnit, OutputList, as_float32, resize_to

HR_DILATIONS = (1, 2, 3, 5, 1, 2, 3, 5, 1)


class DenseBlock(nn.Module):
    """x_l = unit_l([x_0, x_1, ..., x_{l-1}]) for l = 1..L, output = transition([x_0, ..., x_L])."""

    def __init__(self, cin: int, cout: int, layers: int = 2, growth: int | None = None, activation: str = "relu"):
        super().__init__()
        growth = growth or max(1, cout // 2)
        self.units = nn.ModuleList([DilatedUnit(cin + i * growth, growth, (3, 3, 3), activation)
                                    for i in range(layers)])
        self.transition = DilatedUnit(cin + layers * growth, cout, (1, 1, 1), activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for u in self.units:
            feats.append(u(torch.cat(feats, 1)))
        return self.transition(torch.cat(feats, 1))


class DilatedResBlock(nn.Module):
    """Residual dilated conv block: relu(x + IN(conv_d(relu(IN(conv_d(x)))))), 3x3x3 kernels, dilation d.

    Each conv unit computes O(v) = sum_{a,b,c in {-1,0,1}} sum_l w_{a,b,c,l} X(v + d (a,b,c), l)
    (the paper's eq. 1 in 3D, centred)."""

    def __init__(self, channels: int, dilation: int, activation: str = "relu"):
        super().__init__()
        self.unit1 = DilatedUnit(channels, channels, (3, 3, 3), activation, 1, dilation)
        self.unit2 = DilatedUnit(channels, channels, (3, 3, 3), activation, 1, dilation, act=False)
        self.act = nn.ReLU() if activation == "relu" else nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.unit2(self.unit1(x)))


class HRPathway(nn.Module):
    """Nine residual dilated blocks; a 1x1x1 conv over the concatenation of all block outputs (dense
    connection to the end of the pathway) gives its output."""

    def __init__(self, cin: int, channels: int, dilations=HR_DILATIONS, activation: str = "relu"):
        super().__init__()
        self.inp = DilatedUnit(cin, channels, (1, 1, 1), activation)
        self.blocks = nn.ModuleList([DilatedResBlock(channels, d, activation) for d in dilations])
        self.fuse = DilatedUnit(channels * len(dilations), channels, (1, 1, 1), activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        outs = []
        for b in self.blocks:
            x = b(x)
            outs.append(x)
        return self.fuse(torch.cat(outs, 1))


class HMEDN(nn.Module):
    """HMEDN, 3D (see module docstring).

    Args:
        in_channels, out_channels: input modalities, output classes.
        widths: distilling-pathway widths per stage, full resolution first (five stages).
        hr_stage: stage index (0 = full resolution) of the high-resolution pathway; None disables it.
        hr_width: its width L.
        dense_layers: conv units per dense block.
        contour: add the contour-regression head.
        deep_supervision: side outputs (and the HR head) in training mode.
        activation: "relu" or "leaky_relu".
    """

    def __init__(self, in_channels: int, out_channels: int, widths=(16, 32, 64, 128, 256), hr_stage: int | None = 1,
                 hr_width: int = 32, dense_layers: int = 2, contour: bool = True, deep_supervision: bool = True,
                 activation: str = "relu", hr_dilations=HR_DILATIONS):
        super().__init__()
        widths = [int(w) for w in widths]
        n = len(widths)
        if n < 3:
            raise ValueError("widths needs at least three stages")
        if hr_stage is not None and not 0 <= hr_stage < n - 1:
            raise ValueError(f"hr_stage must be in 0..{n - 2} or None")
        self.required_multiple = (2 ** (n - 1),) * 3
        self.deep_supervision = deep_supervision
        self.hr_stage = hr_stage
        self.encoder = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoder.append(DenseBlock(cin, w, dense_layers, activation=activation))
            cin = w
        self.pool = nn.MaxPool3d(2, 2)
        self.hr = HRPathway(widths[hr_stage], hr_width, tuple(hr_dilations), activation) if hr_stage is not None else None
        self.hr_head = nn.Conv3d(hr_width, out_channels, 1) if hr_stage is not None else None
        self.ups, self.decoder = nn.ModuleList(), nn.ModuleList()
        for i in range(n - 2, -1, -1):
            self.ups.append(nn.ConvTranspose3d(widths[i + 1], widths[i], 2, stride=2))
            extra = hr_width if i == hr_stage else 0
            self.decoder.append(DenseBlock(2 * widths[i] + extra, widths[i], dense_layers, activation=activation))
        # side outputs on the decoder stages at 1/2, 1/4, 1/8 (as many as there are, up to three)
        self.side_stages = tuple(range(1, min(3, n - 2) + 1))
        self.side_heads = nn.ModuleList([nn.Conv3d(widths[i], out_channels, 1) for i in self.side_stages])
        merged = widths[0] + len(self.side_stages) * out_channels
        self.final = nn.Conv3d(merged, out_channels, 1)
        self.contour = nn.Conv3d(merged, 1, 1) if contour else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | OutputList:
        skips = []
        hr = None
        for i, enc in enumerate(self.encoder):
            if i:
                x = self.pool(x)
            x = enc(x)
            skips.append(x)
            if i == self.hr_stage:
                hr = self.hr(x)
        skips.pop()
        n = len(self.encoder)
        sides = []
        for k, (up, dec) in enumerate(zip(self.ups, self.decoder)):
            stage = n - 2 - k
            parts = [up(x), skips.pop()]
            if stage == self.hr_stage:
                parts.append(hr)
            x = dec(torch.cat(parts, 1))
            if stage in self.side_stages:
                sides.insert(0, self.side_heads[stage - 1](x))  # finest first
        size = x.shape[2:]
        feats = torch.cat([x] + [resize_to(s, size) for s in sides], 1)
        out = self.final(feats)
        if self.training and self.deep_supervision:
            aux = {}
            if hr is not None:
                aux["hr"] = self.hr_head(hr)
            if self.contour is not None:
                aux["contour"] = self.contour(feats)
            return OutputList([out] + sides, aux)
        return as_float32(out)

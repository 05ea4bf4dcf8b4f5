"""The U-Net family of the paper's Table VI: 3D U-Net, 3D Res U-Net, U-Net cSE / sSE / scSE and 3D SepNet.

One configurable encoder-decoder: max-pooling between levels, transposed-conv up-sampling, skip
concatenation, a 1x1x1 head. What changes between the names is the block:

* ``unet3d`` (Cicek et al.): two conv-IN-ReLU units per level.
* ``res-unet3d``: residual blocks (two units plus a 1x1x1 projection shortcut).
* ``unet3d-cse`` / ``-sse`` / ``-scse``: the plain block followed by channel SE (reduction 2),
  spatial SE, or their element-wise maximum (Roy et al.).
* ``sepnet3d`` (Lei et al.): every 3x3x3 conv becomes an intra-slice 3x3x1 conv followed by an
  inter-slice 1x1x3 conv along ``inter_slice_axis``; the first ``inplane_levels`` poolings are
  intra-slice only, so thin structures keep their through-plane resolution longest.

Widths are not stated in the HMRNet paper, only that its U-Net had 2.7 M parameters: the default
widths (22, 44, 88, 176) (four levels, as the original 3D U-Net) give 2.65-2.70 M parameters;
``sepnet3d`` (about half the weights per level) defaults to five levels (16 ... 256): 2.77 M.
None of the Table VI baselines used deep supervision; ``deep_supervision=True`` adds nnU-Net-style
1x1x1 heads on the decoder levels at 1/2, 1/4, 1/8 (training mode only).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import OutputList, PlainBlock, ResBlock, as_float32

VARIANTS = {
    "unet3d": {"block": "plain", "attention": None, "kind": "3d"},
    "res-unet3d": {"block": "res", "attention": None, "kind": "3d"},
    "unet3d-cse": {"block": "plain", "attention": "cse", "kind": "3d"},
    "unet3d-sse": {"block": "plain", "attention": "sse", "kind": "3d"},
    "unet3d-scse": {"block": "plain", "attention": "scse", "kind": "3d"},
    "sepnet3d": {"block": "plain", "attention": None, "kind": "sep"},
}


class UNet3D(nn.Module):
    """Configurable 3D U-Net (see module docstring for the named variants).

    Args:
        in_channels, out_channels: input modalities, output classes.
        widths: per-level widths, full resolution first (default (22, 44, 88, 176): four levels).
        block: "plain" (two units) or "res" (residual).
        attention: None, "cse", "sse" or "scse" after each block.
        kind: "3d" (3x3x3) or "sep" (3x3x1 + 1x1x3 along ``inter_slice_axis``).
        inter_slice_axis: spatial axis (0..2) of the separable convs and of the in-plane-only pooling.
        inplane_levels: how many of the first poolings skip ``inter_slice_axis`` ("sep" only).
        activation: "relu" (default) or "leaky_relu".
        deep_supervision: training-mode outputs [full, 1/2, 1/4, 1/8].
    """

    def __init__(self, in_channels: int, out_channels: int, widths=(22, 44, 88, 176), block: str = "plain",
                 attention: str | None = None, kind: str = "3d", inter_slice_axis: int | None = None,
                 inplane_levels: int = 1, activation: str = "relu", deep_supervision: bool = False):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2:
            raise ValueError("widths needs at least two levels")
        if block not in ("plain", "res"):
            raise ValueError(f"block must be 'plain' or 'res', not {block!r}")
        if kind == "sep":
            inter_slice_axis = 0 if inter_slice_axis is None else int(inter_slice_axis)
            if inter_slice_axis not in (0, 1, 2):
                raise ValueError(f"inter_slice_axis must be 0, 1 or 2, not {inter_slice_axis!r}")
        make = PlainBlock if block == "plain" else ResBlock
        opts = {"activation": activation, "kind": kind, "axis": inter_slice_axis, "attention": attention}
        self.deep_supervision = deep_supervision
        self.pools = []
        for i in range(len(widths) - 1):
            if kind == "sep" and i < inplane_levels:
                self.pools.append(tuple(1 if d == inter_slice_axis else 2 for d in range(3)))
            else:
                self.pools.append((2, 2, 2))
        self.required_multiple = tuple(int(torch.tensor([p[d] for p in self.pools]).prod()) for d in range(3))
        self.encoder = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoder.append(make(cin, w, **opts))
            cin = w
        self.pool_layers = nn.ModuleList([nn.MaxPool3d(p, p) for p in self.pools])
        self.ups, self.decoder, self.heads = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(len(widths) - 2, -1, -1):
            self.ups.append(nn.ConvTranspose3d(widths[i + 1], widths[i], self.pools[i], stride=self.pools[i]))
            self.decoder.append(make(2 * widths[i], widths[i], **opts))
            self.heads.append(nn.Conv3d(widths[i], out_channels, 1))
        if not deep_supervision:  # only the full-resolution head has weights
            self.heads = nn.ModuleList([self.heads[-1]])

    def forward(self, x: torch.Tensor) -> torch.Tensor | OutputList:
        skips = []
        for i, enc in enumerate(self.encoder):
            if i:
                x = self.pool_layers[i - 1](x)
            x = enc(x)
            skips.append(x)
        skips.pop()
        ds = self.training and self.deep_supervision
        outs = []
        n = len(self.decoder)
        for i, (up, dec) in enumerate(zip(self.ups, self.decoder)):
            x = dec(torch.cat([up(x), skips.pop()], 1))
            if ds and i >= n - 4:
                outs.append(self.heads[i](x))
        if ds:
            return OutputList(outs[::-1])  # [full, 1/2, 1/4, 1/8]
        return as_float32(self.heads[-1](x))

"""HMRNet-p and HMRNet-s: a high-resolution (HR) branch and a multi-resolution (MR) U-shaped branch
of seven conv blocks each, coupled by six bidirectional feature calibrations (after blocks 2..7).

MR widths 16 -> 32 -> 64 -> 128 (max-pool 2 between encoder levels) then 64 -> 32 -> 16 with
trilinear up-sampling and skip connections; HR: seven blocks at full resolution. Head: concat of
both branch outputs -> conv (1x1x1 by default) -> logits. Deep-supervision heads (1x1x1) on the MR
decoder levels at 1/8, 1/4 and 1/2 resolution are evaluated in training mode only.

HMRNet-s uses 2.5D conv units (see blocks.SeparableUnit) and does not pool along the inter-slice
axis at the deepest down-sampling step.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BFC, ConvBlock, as_float32, resize_to, run_block_on_concat
from .cpu_conv import Conv3d


class NoCalibration(nn.Module):
    """Stands where a BFC block would: passes both branches through unchanged (ablation)."""

    def __init__(self, c_h: int, c_m: int):
        super().__init__()
        self.out_h, self.out_m = c_h, c_m

    def forward(self, h: torch.Tensor, m: torch.Tensor, fast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return h, m


class HMRNet(nn.Module):
    """HMRNet (variant "p": 3D convs; variant "s": 2.5D convs along ``inter_slice_axis``).

    Args:
        in_channels: input channels (3: CT, T1, T2).
        out_channels: output classes (2 for a binary fine target).
        variant: "p" or "s".
        hr_width: HR branch width (release 8 -> 3.1 M params; 16 -> the paper's 3.4 M).
        mr_widths: the four MR encoder widths.
        activation: "relu" (paper) or "leaky_relu" (release, slope 0.01).
        head_kernel: kernel of the final head conv (paper 1, release 3).
        post_conv: conv block after each BFC concat bringing channels back to branch width.
        deep_supervision: return [full, 1/2, 1/4, 1/8] logits in training mode.
        inter_slice_axis: spatial axis (0..2 = tensor dim 2..4) of the 1x1x3 convs (variant "s").
        calibration: False removes the six BFC blocks (the two branches meet only at the head): an
            ablation, used to check that the smoke gate notices a broken method.
    """

    def __init__(self, in_channels: int, out_channels: int, variant: str = "p", hr_width: int = 8,
                 mr_widths: tuple[int, int, int, int] = (16, 32, 64, 128), activation: str = "relu",
                 head_kernel: int = 1, post_conv: bool = True, deep_supervision: bool = True,
                 inter_slice_axis: int | None = None, calibration: bool = True):
        super().__init__()
        if variant not in ("p", "s"):
            raise ValueError(f"HMRNet variant must be 'p' or 's', not {variant!r}")
        if variant == "s":
            inter_slice_axis = 2 if inter_slice_axis is None else int(inter_slice_axis)
            if inter_slice_axis not in (0, 1, 2):
                raise ValueError(f"inter_slice_axis must be 0, 1 or 2, not {inter_slice_axis!r}")
        elif inter_slice_axis is not None:
            raise TypeError("inter_slice_axis is an option of hmrnet-s only")
        if len(mr_widths) != 4:
            raise ValueError("mr_widths needs four widths (encoder levels 1..4)")
        if head_kernel not in (1, 3):
            raise ValueError("head_kernel must be 1 or 3")
        self.variant = variant
        self.inter_slice_axis = inter_slice_axis
        self.deep_supervision = deep_supervision
        act, ax = activation, inter_slice_axis

        # Pooling factors between MR levels; -s keeps through-plane resolution at the last step.
        pools = [(2, 2, 2), (2, 2, 2), (2, 2, 2)]
        if variant == "s":
            pools[2] = tuple(1 if d == ax else 2 for d in range(3))
        self.pools = [tuple(p) for p in pools]
        self.required_multiple = tuple(pools[0][d] * pools[1][d] * pools[2][d] for d in range(3))

        w = list(mr_widths)
        mr_out = [w[0], w[1], w[2], w[3], w[2], w[1], w[0]]
        self.hr_blocks = nn.ModuleList()
        self.mr_blocks = nn.ModuleList()
        self.bfcs = nn.ModuleList()
        c_h = c_m = in_channels
        skips: list[int] = []  # widths of the encoder outputs (after their BFC)
        levels: list[int] = []  # widths at 1/8, 1/4, 1/2 (deep-supervision inputs)
        for k in range(7):
            self.hr_blocks.append(ConvBlock(c_h, hr_width, act, ax))
            cin_m = c_m + skips[6 - k] if k >= 4 else c_m  # decoder: up-sampled + skip
            self.mr_blocks.append(ConvBlock(cin_m, mr_out[k], act, ax))
            c_h, c_m = hr_width, mr_out[k]
            if k >= 1:
                bfc = BFC(c_h, c_m, act, ax, post_conv) if calibration else NoCalibration(c_h, c_m)
                self.bfcs.append(bfc)
                c_h, c_m = bfc.out_h, bfc.out_m
            if k < 3:
                skips.append(c_m)
            if 3 <= k <= 5:
                levels.append(c_m)
        self.head = Conv3d(c_h + c_m, out_channels, head_kernel, padding=head_kernel // 2)
        self.ds_heads = nn.ModuleList(
            [nn.Conv3d(c, out_channels, 1) for c in reversed(levels)]
        )  # order: 1/2, 1/4, 1/8
        self.pool_layers = nn.ModuleList([nn.MaxPool3d(p, p) for p in self.pools])
        #: Use the memory-lean, exactly equivalent forward when no gradients are needed.
        self.fast_inference = True

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.fast_inference and not torch.is_grad_enabled() and not self.training:
            return self._forward_fast(x)
        h, m = x, x
        skips: list[torch.Tensor] = []
        ds: list[torch.Tensor] = []
        for k in range(7):
            if 1 <= k <= 3:
                m = self.pool_layers[k - 1](m)
            elif k >= 4:
                skip = skips[6 - k]
                m = torch.cat([resize_to(m, skip.shape[2:]), skip], 1)
            h = self.hr_blocks[k](h)
            m = self.mr_blocks[k](m)
            if k >= 1:
                h, m = self.bfcs[k - 1](h, m)
            if k < 3:
                skips.append(m)
            if 3 <= k <= 5:
                ds.append(m)
        out = self.head(torch.cat([h, m], 1))
        if self.training and self.deep_supervision:
            return [out, self.ds_heads[0](ds[2]), self.ds_heads[1](ds[1]), self.ds_heads[2](ds[0])]
        return out

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Eval forward, same weights and result as ``forward``; up-sampled MR features are never
        materialised at full width (see blocks.BFC._forward_fast) and intermediates are freed early.
        Runs in channels-last layout, which oneDNN convolutions and trilinear up-sampling prefer."""
        x = x.contiguous(memory_format=torch.channels_last_3d)
        h, m = x, x
        skips: list[torch.Tensor] = []
        for k in range(7):
            if 1 <= k <= 3:
                m = self.pool_layers[k - 1](m)
                m = self.mr_blocks[k](m)
            elif k >= 4:
                skip = skips[6 - k]
                m = run_block_on_concat(self.mr_blocks[k], skip, m, skip.shape[2:], low_first=True)
                del skip
                skips[6 - k] = None  # type: ignore[call-overload]
            else:
                m = self.mr_blocks[k](m)
            h = self.hr_blocks[k](h)
            if k >= 1:
                h, m = self.bfcs[k - 1](h, m, fast=True)
            if k < 3:
                skips.append(m)
        out = self.head(torch.cat([h, m], 1))
        return as_float32(out).contiguous()

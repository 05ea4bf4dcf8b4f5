"""Building blocks shared by HMRNet-p, HMRNet-s, the coarse U-Net and the comparison networks.

Every convolution is followed by an affine InstanceNorm and an activation ("conv unit"). A conv
block is two conv units. In the 2.5D ("separable") variant each 3x3x3 conv unit is replaced by
intra-slice 3x3x1 -> inter-slice 1x1x3 -> intra-slice 3x3x1, each with its own norm+activation,
where the "1" / "3" positions are along ``inter_slice_axis`` (0, 1 or 2 = tensor dim 2, 3 or 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_conv import Conv3d

ACTIVATIONS = ("relu", "leaky_relu")


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module; 'relu' (paper) or 'leaky_relu' (release, slope 0.01)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


def as_float32(x: torch.Tensor) -> torch.Tensor:
    """Logits leave the network in float32 even under bf16/fp16 autocast (float64 is kept)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def axis_kernel(size: int, axis: int, along: bool) -> tuple[int, int, int]:
    """Kernel shape with ``size`` along ``axis`` only (along=True) or everywhere but ``axis``."""
    if along:
        return tuple(size if d == axis else 1 for d in range(3))  # type: ignore[return-value]
    return tuple(1 if d == axis else size for d in range(3))  # type: ignore[return-value]


class ConvUnit(nn.Sequential):
    """Conv3d (same padding, bias) -> InstanceNorm3d(affine) -> activation."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (3, 3, 3), activation: str = "relu",
                 stride: int | tuple[int, int, int] = 1):
        pad = tuple(k // 2 for k in kernel)
        super().__init__(
            Conv3d(cin, cout, kernel, stride=stride, padding=pad),
            nn.InstanceNorm3d(cout, affine=True, eps=1e-5),
            make_activation(activation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self[1]
        if (torch.is_grad_enabled() or not isinstance(norm, nn.InstanceNorm3d)
                or not x.is_contiguous(memory_format=torch.channels_last_3d)):
            return super().forward(x)
        # Inference in channels-last layout: nn.InstanceNorm3d would return a channels-first
        # tensor and every following conv/up-sampling would pay for the layout change.
        return self[2](norm_channels_last(self[0](x), norm))


def norm_channels_last(x: torch.Tensor, norm: nn.InstanceNorm3d) -> torch.Tensor:
    """InstanceNorm of a channels-last conv output, returned channels-last.

    float32/64: instance_norm_channels_last in place. bfloat16/float16: the stock kernel plus a
    layout copy, which measured faster than float32 statistics over a low-precision tensor.
    """
    if x.dtype in (torch.float32, torch.float64):
        return instance_norm_channels_last(x, norm, inplace=True)
    return norm(x).contiguous(memory_format=torch.channels_last_3d)


def instance_norm_channels_last(x: torch.Tensor, norm: nn.InstanceNorm3d, inplace: bool = False) -> torch.Tensor:
    """``norm(x)`` (InstanceNorm with instance statistics) for a channels-last x, keeping its layout.

    Statistics in float32 (also for bfloat16 x) from one pass: mean, and E[x^2] as the diagonal of
    X^T X (a GEMM, several times faster on CPU than var_mean over strided dims); var = E[x^2] - mean^2.
    Then one scale-and-shift pass: y = x * gamma / sqrt(var + eps) + (beta - mean * gamma / sqrt(var + eps)).
    """
    n, c = x.shape[:2]
    rows = x.permute(0, 2, 3, 4, 1).reshape(n, -1, c)  # a view for channels-last x
    rows = rows.float() if rows.dtype in (torch.bfloat16, torch.float16) else rows
    mean = rows.mean(1)
    sq = torch.bmm(rows.transpose(1, 2), rows).diagonal(dim1=1, dim2=2) / rows.shape[1]
    del rows
    var = (sq - mean * mean).clamp_min_(0)
    scale = torch.rsqrt(var + norm.eps)
    if norm.affine:
        scale = scale * norm.weight
        shift = norm.bias - mean * scale
    else:
        shift = -mean * scale
    scale = scale.view(n, c, 1, 1, 1).to(x.dtype)
    shift = shift.view(n, c, 1, 1, 1).to(x.dtype)
    if inplace:
        return x.mul_(scale).add_(shift)
    return torch.addcmul(shift, x, scale)


class SeparableUnit(nn.Sequential):
    """2.5D replacement of one 3x3x3 conv unit: 3x3x1 intra -> 1x1x3 inter -> 3x3x1 intra."""

    def __init__(self, cin: int, cout: int, inter_slice_axis: int, activation: str = "relu"):
        intra = axis_kernel(3, inter_slice_axis, along=False)
        inter = axis_kernel(3, inter_slice_axis, along=True)
        super().__init__(
            ConvUnit(cin, cout, intra, activation),
            ConvUnit(cout, cout, inter, activation),
            ConvUnit(cout, cout, intra, activation),
        )


def conv_unit(cin: int, cout: int, activation: str, inter_slice_axis: int | None) -> nn.Module:
    if inter_slice_axis is None:
        return ConvUnit(cin, cout, (3, 3, 3), activation)
    return SeparableUnit(cin, cout, inter_slice_axis, activation)


class ConvBlock(nn.Sequential):
    """Two conv units (3D, or 2.5D when ``inter_slice_axis`` is given)."""

    def __init__(self, cin: int, cout: int, activation: str = "relu", inter_slice_axis: int | None = None):
        super().__init__(
            conv_unit(cin, cout, activation, inter_slice_axis),
            conv_unit(cout, cout, activation, inter_slice_axis),
        )


def resize_to(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Trilinear resampling to ``size`` (align_corners=False); identity when already that size."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def downsample_to(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Down-sampling by an integer factor per axis as a box (average) filter.

    Average pooling is the area-preserving counterpart of trilinear up-sampling and, like it,
    commutes with 1x1x1 convolutions (linear, weights sum to one).
    """
    if tuple(x.shape[2:]) == tuple(size):
        return x
    factor = tuple(a // b for a, b in zip(x.shape[2:], size))
    return F.avg_pool3d(x, kernel_size=factor, stride=factor)


class BFC(nn.Module):
    """Bidirectional feature calibration between the HR and the MR branch.

    With F_h (HR, full resolution, C_h channels) and F_m (MR, its own resolution, C_m channels),
    both taken from *before* this BFC::

        HR: alpha_h = sigmoid(conv1x1_{C_m->1}(up(F_m)));   F_h_out = post_h(alpha_h * [F_h, up(F_m)])
        MR: alpha_m = sigmoid(conv1x1_{C_h->1}(down(F_h))); F_m_out = post_m(alpha_m * [F_m, down(F_h)])

    ``post_*`` is a conv block bringing channels back to the branch width (release behaviour,
    ``post_conv=True``); without it the branch widths grow by the other branch's width.
    up = trilinear, down = average pooling by the resolution ratio.
    """

    def __init__(self, c_h: int, c_m: int, activation: str = "relu", inter_slice_axis: int | None = None,
                 post_conv: bool = True):
        super().__init__()
        self.c_h, self.c_m = c_h, c_m
        self.att_h = nn.Conv3d(c_m, 1, 1)
        self.att_m = nn.Conv3d(c_h, 1, 1)
        self.post_conv = post_conv
        if post_conv:
            self.post_h = ConvBlock(c_h + c_m, c_h, activation, inter_slice_axis)
            self.post_m = ConvBlock(c_m + c_h, c_m, activation, inter_slice_axis)
        self.out_h = c_h if post_conv else c_h + c_m
        self.out_m = c_m if post_conv else c_m + c_h

    def forward(self, f_h: torch.Tensor, f_m: torch.Tensor, fast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if fast and self.post_conv:
            return self._forward_fast(f_h, f_m)
        up_m = resize_to(f_m, f_h.shape[2:])
        down_h = downsample_to(f_h, f_m.shape[2:])
        h = torch.sigmoid(self.att_h(up_m)) * torch.cat([f_h, up_m], 1)
        m = torch.sigmoid(self.att_m(down_h)) * torch.cat([f_m, down_h], 1)
        if self.post_conv:
            h = self.post_h(h)
            m = self.post_m(m)
        return h, m

    def _forward_fast(self, f_h: torch.Tensor, f_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Same result as the plain path without materialising up(F_m) at full width.

        Exact rewrites: conv1x1(up(F_m)) = up(conv1x1(F_m)) (both linear, interpolation weights
        sum to one), so alpha_h is computed at F_m's resolution and only the one-channel map is
        up-sampled; and the first conv of post_h over the concat is the sum of convs over its parts,
        so up(F_m) is produced and consumed a few channels at a time.
        """
        size = f_h.shape[2:]
        down_h = downsample_to(f_h, f_m.shape[2:])
        alpha_m = torch.sigmoid(self.att_m(down_h))
        m = self.post_m(alpha_m * torch.cat([f_m, down_h], 1))
        del down_h, alpha_m
        alpha_h = torch.sigmoid(resize_to(self.att_h(f_m), size))
        h = run_block_on_concat(self.post_h, f_h, f_m, size, alpha=alpha_h)
        return h, m


def conv_over_concat(conv: nn.Conv3d, full: torch.Tensor, low: torch.Tensor, size, alpha: torch.Tensor | None = None,
                     low_first: bool = False, chunk: int = 32) -> torch.Tensor:
    """conv(alpha * cat([full, up(low)])) (or cat([up(low), full]) when ``low_first``), computed as a sum
    of convolutions over the parts, up-sampling ``low`` ``chunk`` channels at a time."""
    w = conv.weight
    c_full, c_low = full.shape[1], low.shape[1]
    w_full = w[:, c_low:] if low_first else w[:, :c_full]
    off = 0 if low_first else c_full
    x = full if alpha is None else full * alpha
    out = F.conv3d(x, w_full, conv.bias, conv.stride, conv.padding)
    del x
    for s in range(0, c_low, chunk):
        # channels-last up-sampling is several times faster on CPU (measured 0.13 -> 0.05 s fp32)
        part = resize_to(low[:, s:s + chunk].contiguous(memory_format=torch.channels_last_3d), size)
        if alpha is not None:
            part = part * alpha
        out += F.conv3d(part, w[:, off + s:off + s + part.shape[1]], None, conv.stride, conv.padding)
        del part
    return out


def run_block_on_concat(block: ConvBlock, full: torch.Tensor, low: torch.Tensor, size,
                        alpha: torch.Tensor | None = None, low_first: bool = False) -> torch.Tensor:
    """``block(alpha * cat([full, up(low)]))`` without materialising the concat (see conv_over_concat)."""
    first = block[0]
    unit = first[0] if isinstance(first, SeparableUnit) else first  # the ConvUnit that sees the input
    x = conv_over_concat(unit[0], full, low, size, alpha, low_first)
    if x.is_contiguous(memory_format=torch.channels_last_3d) and isinstance(unit[1], nn.InstanceNorm3d):
        x = unit[2](norm_channels_last(x, unit[1]))
    else:
        x = unit[2](unit[1](x))
    if isinstance(first, SeparableUnit):
        x = first[2](first[1](x))
    return block[1](x)


# ---------------------------------------------------------------- blocks of the comparison networks


class OutputList(list):
    """Training-mode outputs: ``[full, 1/2, 1/4, ...]`` segmentation logits (what DeepSupervisionLoss
    reads) plus ``aux``, a dict of the extra heads a network has (contours, heat maps, ROI masks)."""

    def __init__(self, outputs, aux: dict | None = None):
        super().__init__(outputs)
        self.aux = dict(aux or {})


def kernel_for(kind: str, axis: int | None) -> list[tuple[int, int, int]]:
    """Kernels of one 'conv' of a block: ``"3d"`` -> [3x3x3]; ``"sep"`` -> intra 3x3x1 then inter 1x1x3
    (the separable factorisation of 3D SepNet) around ``axis``."""
    if kind == "3d":
        return [(3, 3, 3)]
    if kind == "sep":
        ax = 0 if axis is None else axis
        return [axis_kernel(3, ax, along=False), axis_kernel(3, ax, along=True)]
    raise ValueError(f"unknown conv kind {kind!r} (3d or sep)")


class ChannelSE(nn.Module):
    """cSE (Hu et al.; Roy et al.): x * sigmoid(W2 relu(W1 GAP(x))); ``reduction`` r gives C/r hidden units."""

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv3d(channels, hidden, 1)
        self.fc2 = nn.Conv3d(hidden, channels, 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3, 4), keepdim=True)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SpatialSE(nn.Module):
    """sSE (Roy et al.): x * sigmoid(conv1x1x1_{C->1}(x)), a per-voxel gate shared by all channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class ConcurrentSE(nn.Module):
    """scSE (Roy et al.): element-wise max of the cSE and sSE outputs (the journal version's best
    aggregation; ``combine="add"`` gives the conference version's sum)."""

    def __init__(self, channels: int, reduction: int = 2, combine: str = "max"):
        super().__init__()
        if combine not in ("max", "add"):
            raise ValueError("combine must be 'max' or 'add'")
        self.cse, self.sse, self.combine = ChannelSE(channels, reduction), SpatialSE(channels), combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cse(x), self.sse(x)
        return torch.maximum(a, b) if self.combine == "max" else a + b


def make_attention(kind: str | None, channels: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    table = {"cse": lambda: ChannelSE(channels), "sse": lambda: SpatialSE(channels),
             "scse": lambda: ConcurrentSE(channels)}
    if kind not in table:
        raise ValueError(f"unknown attention {kind!r} (cse, sse, scse or None)")
    return table[kind]()


class UnitStack(nn.Sequential):
    """Conv units for one 'conv' of a block (one 3x3x3 unit, or the separable 3x3x1 + 1x1x3 pair)."""

    def __init__(self, cin: int, cout: int, activation: str = "relu", kind: str = "3d", axis: int | None = None,
                 stride: int | tuple[int, int, int] = 1, dilation: int | tuple[int, int, int] = 1):
        units = []
        for i, k in enumerate(kernel_for(kind, axis)):
            units.append(DilatedUnit(cin if i == 0 else cout, cout, k, activation, stride if i == 0 else 1, dilation))
        super().__init__(*units)


class DilatedUnit(nn.Sequential):
    """Conv3d (same padding, optional dilation) -> InstanceNorm3d(affine) -> activation."""

    def __init__(self, cin: int, cout: int, kernel=(3, 3, 3), activation: str = "relu", stride=1, dilation=1,
                 act: bool = True):
        dil = (dilation,) * 3 if isinstance(dilation, int) else tuple(dilation)
        pad = tuple(d * (k // 2) for k, d in zip(kernel, dil))
        layers = [Conv3d(cin, cout, kernel, stride=stride, padding=pad, dilation=dil),
                  nn.InstanceNorm3d(cout, affine=True, eps=1e-5)]
        if act:
            layers.append(make_activation(activation))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual block: unit -> unit (no activation) + shortcut (1x1x1 conv+IN when shape changes),
    then the activation; optional attention (e.g. SE) on the residual branch before the sum."""

    def __init__(self, cin: int, cout: int, activation: str = "relu", kind: str = "3d", axis: int | None = None,
                 stride=1, dilation=1, attention: str | None = None):
        super().__init__()
        self.body = nn.Sequential(
            UnitStack(cin, cout, activation, kind, axis, stride, dilation),
            *[DilatedUnit(cout, cout, k, activation, 1, dilation, act=(i < len(kernel_for(kind, axis)) - 1))
              for i, k in enumerate(kernel_for(kind, axis))],
        )
        self.attention = make_attention(attention, cout)
        needs_proj = cin != cout or stride != 1
        self.shortcut = (nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride), nn.InstanceNorm3d(cout, affine=True))
                         if needs_proj else nn.Identity())
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.attention(self.body(x)) + self.shortcut(x))


class PlainBlock(nn.Sequential):
    """Two convs (3D or separable), then optional attention (cSE / sSE / scSE)."""

    def __init__(self, cin: int, cout: int, activation: str = "relu", kind: str = "3d", axis: int | None = None,
                 stride=1, dilation=1, attention: str | None = None):
        super().__init__(UnitStack(cin, cout, activation, kind, axis, stride, dilation),
                         UnitStack(cout, cout, activation, kind, axis, 1, dilation),
                         make_attention(attention, cout))


def same_size_up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Trilinear resampling of ``x`` to the spatial size of ``like``."""
    return resize_to(x, like.shape[2:])

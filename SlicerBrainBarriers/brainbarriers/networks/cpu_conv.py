"""A Conv3d whose single-sample CPU training runs on the oneDNN kernels.

PyTorch (measured with 2.13) sends a float32 CPU conv3d with a batch of 1 and a small input
(N*C*D*H at most 20480: every fine crop of the demo recipe, and the deeper coarse levels) to its
reference kernel, ``slow_conv3d``, and the same convolution with a batch of 2 to oneDNN. On one
thread the reference kernel is several times slower: an 8 -> 8 channel 3x3x3 convolution of a
40^3 crop took 193 ms forward and backward, against 53 ms for a batch of two such crops
(``python bench/bench_cpu_conv.py`` prints today's figures).

:func:`conv3d` therefore cuts a batch-1 volume in two along its last axis, each half with the
halo its kernel reads, stacks the halves as a batch of 2 and joins the two outputs: the same
convolution (to float32 rounding) on the fast kernel, with autograd through the pad, stack and
join. :class:`Conv3d` uses it in training mode only. In eval mode it is ``nn.Conv3d`` unchanged, so
that a shipped model's outputs stay those its model card measured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: PyTorch already picks oneDNN for a batch-1 input with N*C*D*H above this (aten's
#: ConvParams::use_mkldnn); splitting such an input would only add copies.
ONEDNN_MIN_ELEMENTS = 20480
#: Below this output width along the cut axis the two halves' halos cost more than they save.
MIN_SPLIT_WIDTH = 8


def _triple(value) -> tuple[int, int, int]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * 3  # type: ignore[return-value]


def would_split(x: torch.Tensor, weight: torch.Tensor, groups: int = 1, padding=0) -> bool:
    """Whether :func:`conv3d` cuts this input in two (else it calls ``F.conv3d`` as is)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 5 and x.shape[0] == 1
            and groups == 1 and not isinstance(padding, str)
            # a 1x1 kernel in the last two axes stays on the reference kernel on one thread anyway
            and not (weight.shape[-1] == 1 and weight.shape[-2] == 1)
            and x.shape[1] * x.shape[2] * x.shape[3] <= ONEDNN_MIN_ELEMENTS
            and x.shape[4] >= MIN_SPLIT_WIDTH)


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> torch.Tensor:
    """``F.conv3d`` with the same arguments; a batch-1 CPU input is computed as two halves (module doc)."""
    if not would_split(x, weight, groups, padding):
        return F.conv3d(x, weight, bias, stride, padding, dilation, groups)
    s, p, d = _triple(stride), _triple(padding), _triple(dilation)
    xp = F.pad(x, (p[2], p[2], p[1], p[1], p[0], p[0]))
    reach = (weight.shape[-1] - 1) * d[2] + 1  # input columns one output column reads
    width = (xp.shape[4] - reach) // s[2] + 1  # output columns along the cut axis
    half = (width + 1) // 2  # the first half's output columns; the second has as many (or one too many)
    length = (half - 1) * s[2] + reach  # input columns each half reads
    start = half * s[2]
    short = start + length - xp.shape[4]
    if short > 0:  # an odd width: the second half reads zeros for a column that is dropped below
        xp = F.pad(xp, (0, short))
    both = torch.cat([xp[..., :length], xp[..., start:start + length]], 0)
    out = F.conv3d(both, weight, bias, s, 0, d, 1)
    return torch.cat([out[:1], out[1:]], 4)[..., :width]


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters and state dict) that trains through :func:`conv3d`."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not self.training or self.padding_mode != "zeros":
            return super()._conv_forward(input, weight, bias)
        return conv3d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

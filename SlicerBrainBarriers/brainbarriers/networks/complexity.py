"""Parameter and multiply-accumulate (MAC) counts of a network.

MACs are counted with forward hooks on the layers that hold almost all the arithmetic: Conv3d and
ConvTranspose3d (per output element: C_in/groups * kernel volume; transposed: per input element
C_out/groups * kernel volume) and Linear, plus the batched matrix products of attention modules
that report their own (``extra_macs`` attribute set during forward, e.g. EMA). Normalisation,
activations, pooling and interpolation are not counted (the same convention as fvcore/thop/ptflops
for these layers). Hand-written to avoid a dependency for twenty lines.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_macs(net: nn.Module, shape: tuple[int, ...], in_channels: int = 3) -> int:
    """MACs of one eval-mode forward of a batch-1 input of spatial ``shape`` (padded by the caller)."""
    total = 0

    def conv_hook(mod, inputs, output):
        nonlocal total
        k = math.prod(mod.kernel_size)
        if isinstance(mod, nn.ConvTranspose3d):
            total += inputs[0].numel() * mod.out_channels // mod.groups * k
        else:
            total += output.numel() * mod.in_channels // mod.groups * k

    def linear_hook(mod, inputs, output):
        nonlocal total
        total += output.numel() * mod.in_features

    def extra_hook(mod, inputs, output):
        nonlocal total
        total += int(getattr(mod, "extra_macs", 0))

    handles = []
    for m in net.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif hasattr(m, "extra_macs"):
            handles.append(m.register_forward_hook(extra_hook))
    was_training, fast = net.training, getattr(net, "fast_inference", None)
    net.eval()
    if fast is not None:  # HMRNet's lean path calls F.conv3d directly, which no hook sees; same arithmetic
        net.fast_inference = False
    try:
        with torch.no_grad():
            net(torch.zeros(1, in_channels, *shape))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
        if fast is not None:
            net.fast_inference = fast
    return total

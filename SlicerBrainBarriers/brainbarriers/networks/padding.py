"""Pad a crop to a network's required multiple and crop the prediction back."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: Sequence[int] | int,
                    value: float = 0.0) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad the spatial dims (2..4) of ``x`` symmetrically with ``value`` to multiples of ``multiple``.

    Returns the padded tensor and the index tuple that crops a same-layout output back to the
    input's spatial size (``out[crop]``). Zero is the mean after z-scoring, and the value given
    to a missing modality.
    """
    spatial = x.shape[2:]
    if isinstance(multiple, int):
        multiple = (multiple,) * len(spatial)
    if len(multiple) != len(spatial):
        raise ValueError(f"multiple {tuple(multiple)} does not match {len(spatial)} spatial dims")
    before, after = [], []
    for size, m in zip(spatial, multiple):
        total = (-size) % int(m)
        before.append(total // 2)
        after.append(total - total // 2)
    crop = (slice(None), slice(None)) + tuple(slice(b, b + s) for b, s in zip(before, spatial))
    if not any(before) and not any(after):
        return x, crop
    pads: list[int] = []
    for b, a in zip(reversed(before), reversed(after)):  # F.pad wants last dim first
        pads += [b, a]
    return F.pad(x, pads, mode="constant", value=value), crop


def predict_padded(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``net`` on ``x`` padded to ``net.required_multiple``; return logits at ``x``'s size.

    In training mode with deep supervision only the full-resolution output is returned.
    """
    padded, crop = pad_to_multiple(x, net.required_multiple)
    out = net(padded)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out[crop]

"""Tiny labelled volumes for the overfit tests of every network."""

from __future__ import annotations

import torch


def grid(shape):
    return torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")


def sheet(axis: int, size: int = 16) -> torch.Tensor:
    """A wavy sheet two voxels thick across ``axis``."""
    grids = grid((size,) * 3)
    others = [grids[d] for d in range(3) if d != axis]
    centre = size / 2 + 1.5 * torch.sin(others[0] / 3) + torch.cos(others[1] / 4)
    return ((grids[axis] - centre).abs() < 1.0).long()


def image(label: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Three noisy channels in which the label shows with different contrasts: (1, 3, ...)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(3, *label.shape, generator=g) * 0.3
    scale = torch.tensor([1.0, -0.7, 0.5]).view(3, 1, 1, 1)
    return (label[None].float() * scale + noise)[None]


def dice(pred: torch.Tensor, label: torch.Tensor) -> float:
    inter = ((pred == 1) & (label == 1)).sum()
    return float(2 * inter / ((pred == 1).sum() + (label == 1).sum()))

"""Inference set-up: put a network in eval mode and wrap forwards in the fastest safe context."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def prepare_for_inference(net: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients on parameters. Returns the same module (same weights)."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@contextlib.contextmanager
def inference_context(device: torch.device | str = "cpu", precision: str = "fp32") -> Iterator[None]:
    """Context for every inference forward: ``torch.inference_mode`` (+ autocast for precision="bf16")."""
    device = torch.device(device)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
    with torch.inference_mode():
        if precision == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

"""Several trained networks of one target as one: the mean of their softmax probabilities.

Two runs of the same recipe on different seeds disagree most where the image is weakest (the
superior sagittal sinus at the vertex of a T1); their mean is steadier than either. The module
returns the log of the mean probability, so the caller's softmax gives that mean back and it runs
wherever a single network runs (padding to ``required_multiple``, any device or precision).
"""

from __future__ import annotations

import torch
from torch import nn


class MeanOfMembers(nn.Module):
    """Log of the mean softmax of ``members`` (each maps the same input to the same classes)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        multiples = {tuple(getattr(m, "required_multiple", (1, 1, 1))) for m in members}
        if len(multiples) != 1:
            raise ValueError(f"ensemble members need the same input multiple, not {sorted(multiples)}")
        self.members = nn.ModuleList(members)
        self.required_multiple = members[0].required_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            out = member(x)
            if isinstance(out, (list, tuple)):  # deep supervision: the full-resolution output
                out = out[0]
            probability = torch.softmax(out.float(), 1)
            total = probability if total is None else total + probability
        return torch.log((total / len(self.members)).clamp_min(1e-12))

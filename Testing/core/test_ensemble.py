"""MeanOfMembers: several networks of one target as one, the mean of their probabilities."""

from __future__ import annotations

import pytest
import torch
from brainbarriers.networks import build
from brainbarriers.networks.ensemble import MeanOfMembers
from brainbarriers.networks.padding import predict_padded

TINY = {"hr_width": 2, "mr_widths": [4, 4, 8, 8]}


def _member(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build("hmrnet-s", 3, 2, **TINY).eval()


def test_the_softmax_of_the_ensemble_is_the_mean_of_its_members_softmax():
    a, b = _member(0), _member(1)
    x = torch.randn(1, 3, 16, 16, 12)
    with torch.no_grad():
        pa, pb = (torch.softmax(predict_padded(n, x), 1) for n in (a, b))
        mean = torch.softmax(predict_padded(MeanOfMembers([a, b]), x), 1)
    assert not torch.allclose(pa, pb, atol=1e-4)  # two seeds, two different networks
    torch.testing.assert_close(mean, (pa + pb) / 2, atol=1e-6, rtol=1e-5)


def test_an_ensemble_needs_two_members_of_the_same_input_multiple():
    with pytest.raises(ValueError, match="at least two"):
        MeanOfMembers([_member(0)])
    coarse = build("coarse-unet", 3, 7, levels=3, base_width=4, max_width=8).eval()
    assert tuple(coarse.required_multiple) == (4, 4, 4) != tuple(_member(0).required_multiple)
    with pytest.raises(ValueError, match="same input multiple"):
        MeanOfMembers([_member(0), coarse])

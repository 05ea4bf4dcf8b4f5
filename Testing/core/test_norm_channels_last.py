"""The channels-last instance norm of training (networks/blocks.py InstanceNormChannelsLast): the
same values and gradients as the stock kernel, the layout kept, and the channels-first networks
left on the stock kernel."""

import pytest
import torch
from brainbarriers.networks import build
from brainbarriers.networks.blocks import ConvUnit, InstanceNormChannelsLast, trains_channels_last
from torch import nn

CL = torch.channels_last_3d


def affine_norm(channels: int, dtype=torch.float32) -> nn.InstanceNorm3d:
    norm = nn.InstanceNorm3d(channels, affine=True).to(dtype)
    with torch.no_grad():  # away from the initial 1 / 0, so that a swapped gamma/beta gradient shows
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1.0, 1.0)
    return norm


def test_gradcheck_float64():
    torch.manual_seed(0)
    x = (torch.randn(2, 5, 6, 7, 4, dtype=torch.float64) * 3 + 1).contiguous(memory_format=CL)
    norm = affine_norm(5, torch.float64)
    assert torch.autograd.gradcheck(lambda a, w, b: InstanceNormChannelsLast.apply(a, w, b, 1e-5),
                                    (x.requires_grad_(), norm.weight, norm.bias))


def test_matches_the_stock_norm_in_float64_and_keeps_layout():
    torch.manual_seed(1)
    norm64 = affine_norm(8, torch.float64)
    x = torch.randn(1, 8, 20, 24, 16, dtype=torch.float64) * 2 + 3
    dy = torch.randn(1, 8, 20, 24, 16, dtype=torch.float64)

    def run(dtype, ours):
        norm = affine_norm(8, dtype)
        norm.load_state_dict(norm64.state_dict())
        a = x.to(dtype)
        a = (a.contiguous(memory_format=CL) if ours else a.clone()).requires_grad_()
        y = InstanceNormChannelsLast.apply(a, norm.weight, norm.bias, norm.eps) if ours else norm(a)
        y.backward(dy.to(dtype).contiguous(memory_format=CL) if ours else dy.to(dtype))
        return y.detach(), a.grad, norm.weight.grad, norm.bias.grad

    truth = run(torch.float64, ours=False)
    ours = run(torch.float32, ours=True)
    assert ours[0].is_contiguous(memory_format=CL) and ours[1].is_contiguous(memory_format=CL)
    for mine, exact in zip(ours, truth):
        assert ((mine.double() - exact).abs().max() / exact.abs().max()).item() < 1e-5


def test_only_channels_last_float32_cpu_takes_it():
    norm = affine_norm(4)
    assert trains_channels_last(torch.zeros(1, 4, 6, 6, 6).contiguous(memory_format=CL), norm)
    assert not trains_channels_last(torch.zeros(1, 4, 6, 6, 6), norm)  # the fine networks' layout
    assert not trains_channels_last(torch.zeros(1, 1, 6, 6, 6), affine_norm(1))  # both layouts at once
    assert not trains_channels_last(torch.zeros(1, 4, 6, 6, 6, dtype=torch.float64).contiguous(memory_format=CL), norm)
    assert not trains_channels_last(torch.zeros(1, 4, 6, 6, 6).contiguous(memory_format=CL),
                                    nn.InstanceNorm3d(4, affine=False))


def test_channels_first_training_is_the_stock_computation():
    # the fine networks train channels-first: their conv units must compute exactly what they did
    torch.manual_seed(2)
    unit = ConvUnit(3, 6, activation="leaky_relu").train()
    x = torch.randn(1, 3, 10, 12, 8)
    expected = unit[2](unit[1](unit[0](x)))
    torch.testing.assert_close(unit(x), expected, rtol=0, atol=0)


def coarse_gradients(net: nn.Module, x: torch.Tensor, dtype: torch.dtype, channels_last: bool) -> dict:
    net = net.to(dtype).to(memory_format=CL if channels_last else torch.contiguous_format)
    x = x.to(dtype)
    net.zero_grad()
    outs = net(x.contiguous(memory_format=CL) if channels_last else x)
    sum(o.square().mean() for o in outs).backward()
    # a conv bias right before an InstanceNorm has a gradient of exactly zero: only rounding is left
    return {n: p.grad.double().clone() for n, p in net.named_parameters()
            if not (n.endswith(".0.bias") and n.split(".")[0] in ("encoder", "decoder"))}


def test_coarse_network_gradients_are_float32_accurate():
    # against the float64 channels-first step: the channels-last norm (float32) within 1e-3 of each
    # tensor's largest gradient (measured 4e-5; the stock float32 kernel measured 4e-3 here)
    torch.manual_seed(3)
    net = build("coarse-unet", 3, 7, levels=3, base_width=4, max_width=16).train()
    x = torch.randn(1, 3, 16, 20, 16)
    truth = coarse_gradients(net, x, torch.float64, channels_last=False)
    ours = coarse_gradients(net, x, torch.float32, channels_last=True)
    assert ours.keys() == truth.keys()
    for name, exact in truth.items():
        assert ((ours[name] - exact).abs().max() / exact.abs().max()).item() < 1e-3, name


@pytest.mark.parametrize("used", [True, False])
def test_the_training_unit_uses_the_path_it_says(used, monkeypatch):
    calls = []
    original = InstanceNormChannelsLast.apply
    monkeypatch.setattr(InstanceNormChannelsLast, "apply", lambda *a: calls.append(1) or original(*a))
    unit = ConvUnit(3, 4, activation="leaky_relu").train()
    x = torch.randn(1, 3, 8, 8, 8)
    if used:
        unit = unit.to(memory_format=CL)
        x = x.contiguous(memory_format=CL)
    unit(x).sum().backward()
    assert bool(calls) == used

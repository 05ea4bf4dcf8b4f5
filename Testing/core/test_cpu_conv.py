"""The batch-1 CPU convolution computed in two halves (networks/cpu_conv.py): the same numbers and
gradients as F.conv3d, on the oneDNN kernel, and only in training mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from brainbarriers.networks import build
from brainbarriers.networks.cpu_conv import Conv3d, conv3d, would_split
from torch.profiler import ProfilerActivity, profile

CASES = [  # kernel, stride, padding, dilation, input size (odd and even widths)
    ((3, 3, 3), 1, 1, 1, (17, 20, 23)),
    ((3, 3, 3), 1, 1, 1, (16, 16, 16)),
    ((3, 3, 1), 1, (1, 1, 0), 1, (21, 19, 18)),
    ((1, 1, 3), 1, (0, 0, 1), 1, (21, 19, 18)),
    ((3, 1, 1), 1, (1, 0, 0), 1, (12, 13, 15)),
    ((3, 3, 3), 2, 1, 1, (17, 20, 23)),
    ((3, 3, 3), 2, 1, 1, (16, 16, 16)),
    ((3, 3, 3), 1, 2, 2, (15, 16, 19)),
    ((3, 3, 3), 1, 0, 1, (10, 11, 12)),
    ((5, 5, 5), (1, 2, 2), 2, 1, (14, 14, 14)),
]


@pytest.mark.parametrize("kernel,stride,padding,dilation,size", CASES)
def test_same_output_and_gradients_as_f_conv3d(kernel, stride, padding, dilation, size):
    torch.manual_seed(0)
    x = torch.randn(1, 3, *size, requires_grad=True)
    w = torch.randn(5, 3, *kernel, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    if kernel != (3, 1, 1):
        assert would_split(x, w, 1, padding)
    ref = F.conv3d(x, w, b, stride, padding, dilation)
    got = conv3d(x, w, b, stride, padding, dilation)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (x, w, b), g)
    got_grads = torch.autograd.grad(got, (x, w, b), g)
    for a, r in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-3)


def test_inputs_it_leaves_to_f_conv3d():
    w = torch.zeros(4, 4, 3, 3, 3)
    assert not would_split(torch.zeros(2, 4, 16, 16, 16), w)  # a batch of 2 is oneDNN's already
    assert not would_split(torch.zeros(1, 4, 16, 16, 16, dtype=torch.float64), w.double())
    assert not would_split(torch.zeros(1, 16, 40, 40, 40), torch.zeros(4, 16, 3, 3, 3))  # large: oneDNN's
    assert not would_split(torch.zeros(1, 4, 16, 16, 4), w)  # too narrow to be worth two halves
    assert not would_split(torch.zeros(1, 4, 16, 16, 16), torch.zeros(4, 4, 1, 1, 1))
    assert not would_split(torch.zeros(1, 4, 16, 16, 16), w, padding="same")


def _kernels(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def test_runs_on_onednn_instead_of_the_reference_kernel():
    x = torch.randn(1, 8, 24, 24, 24, requires_grad=True)
    w = torch.randn(8, 8, 3, 3, 3, requires_grad=True)
    stock = _kernels(lambda: F.conv3d(x, w, None, 1, 1).sum().backward())
    split = _kernels(lambda: conv3d(x, w, None, 1, 1).sum().backward())
    # what the split is for: if torch stops sending this input to slow_conv3d, this says so
    assert "aten::slow_conv3d_forward" in stock
    assert "aten::slow_conv3d_forward" not in split
    assert "aten::mkldnn_convolution" in split


def test_module_splits_in_training_only_and_keeps_the_state_dict():
    torch.manual_seed(1)
    plain = torch.nn.Conv3d(4, 6, 3, padding=1)
    conv = Conv3d(4, 6, 3, padding=1)
    conv.load_state_dict(plain.state_dict())
    assert list(conv.state_dict()) == list(plain.state_dict())
    x = torch.randn(1, 4, 20, 20, 20)
    conv.eval()
    assert torch.equal(conv(x), plain(x))  # eval: nn.Conv3d's own kernel, bit for bit
    assert "aten::slow_conv3d_forward" in _kernels(lambda: conv(x))
    conv.train()
    assert "aten::slow_conv3d_forward" not in _kernels(lambda: conv(x))
    torch.testing.assert_close(conv(x), plain(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["hmrnet-p", "hmrnet-s", "coarse-unet"])
def test_networks_train_through_the_split(name):
    torch.manual_seed(2)
    options = {"levels": 3, "base_width": 4} if name == "coarse-unet" else {"hr_width": 4, "mr_widths": [8, 16, 16, 32]}
    net = build(name, 3, 2, **options)
    x = torch.randn(1, 3, 24, 24, 24)

    def step():
        out = net(x)
        (out[0] if isinstance(out, (list, tuple)) else out).sum().backward()

    net.train()
    assert "aten::mkldnn_convolution" in _kernels(step)
    net.eval()
    with torch.no_grad():
        assert "aten::mkldnn_convolution" not in _kernels(lambda: net(x))

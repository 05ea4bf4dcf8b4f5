"""Inference context: precision choices, and the lean eval path runs on the training module."""

import pytest
import torch
from brainbarriers.networks import build
from brainbarriers.networks.inference import inference_context, prepare_for_inference, resolve_precision


def test_precision_choices():
    assert resolve_precision("cpu", "fp32") == "fp32"
    assert resolve_precision("cpu", "bf16") == "bf16"
    assert resolve_precision("cpu", "auto") in ("fp32", "bf16")
    with pytest.raises(ValueError):
        resolve_precision("cpu", "fp8")


def test_same_module_same_weights():
    torch.manual_seed(0)
    net = build("hmrnet-p", 3, 2, hr_width=2, mr_widths=(4, 4, 4, 4))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    same = prepare_for_inference(net)
    assert same is net and not net.training
    x = torch.randn(1, 3, 16, 16, 16)
    with inference_context("cpu", "fp32"):
        out = net(x)
        assert torch.is_inference_mode_enabled()
    assert out.shape == (1, 2, 16, 16, 16) and out.dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with inference_context("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert net(x).dtype == torch.float32

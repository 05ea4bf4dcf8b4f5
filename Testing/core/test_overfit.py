"""Each network, with its loss and deep supervision, overfits a tiny synthetic structure on CPU."""

import time

import pytest
import torch
from brainbarriers.networks import build
from brainbarriers.networks.inference import inference_context, prepare_for_inference
from brainbarriers.networks.padding import predict_padded
from brainbarriers_training.losses import DeepSupervisionLoss, DiceCELoss, FNDiceCELoss
from phantoms import dice as _dice
from phantoms import image as _image
from phantoms import sheet as _sheet

SIZE = 16


def _blob():
    z, y, x = torch.meshgrid(*[torch.arange(SIZE, dtype=torch.float32)] * 3, indexing="ij")
    r = ((z - 7) ** 2 + (y - 8) ** 2 / 1.5 + (x - 7) ** 2) ** 0.5
    return (r < 4.5).long()


def _overfit(net, loss, x, label, max_steps=150):
    """Train until the eval-mode Dice exceeds 0.9 (checked every 10 steps); return (dice, steps).

    Bounded by steps, not seconds (timings belong to benchmarks); on an idle 2-core machine each
    case takes well under a minute.
    """
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    target = label[None, None]
    dice, step = 0.0, 0
    while step < max_steps:
        net.train()
        for _ in range(10):
            opt.zero_grad()
            loss(net(x), target).backward()
            opt.step()
        step += 10
        net.eval()
        with torch.no_grad():
            dice = _dice(predict_padded(net, x).argmax(1)[0], label)
        if dice > 0.9:
            break
    return dice, step


SMALL = {"hr_width": 4, "mr_widths": (8, 8, 16, 16)}


@pytest.mark.parametrize(
    "name,options,make_label,theta",
    [
        ("hmrnet-p", SMALL, _blob, 2.0),
        ("hmrnet-s", {**SMALL, "inter_slice_axis": 2}, lambda: _sheet(2), 3.0),
        ("hmrnet-s", {**SMALL, "inter_slice_axis": 0}, lambda: _sheet(0), 3.0),
        ("coarse-unet", {"base_width": 8, "max_width": 32, "levels": 4}, _blob, None),
    ],
)
def test_overfit(name, options, make_label, theta):
    torch.manual_seed(0)
    label = make_label()
    x = _image(label)
    net = build(name, 3, 2, **options)
    base = DiceCELoss() if theta is None else FNDiceCELoss(theta)
    start = time.perf_counter()
    dice, steps = _overfit(net, DeepSupervisionLoss(base), x, label)
    elapsed = time.perf_counter() - start
    assert dice > 0.9, (dice, steps, elapsed)
    # the bf16 inference path labels (almost) every voxel as fp32 does, on a trained network
    prepare_for_inference(net)
    with inference_context("cpu", "fp32"):
        ref = predict_padded(net, x).argmax(1)
    with inference_context("cpu", "bf16"):
        low = predict_padded(net, x)
    assert low.dtype == torch.float32
    agreement = float((low.argmax(1) == ref).float().mean())
    assert agreement > 0.995, agreement
    print(f"{name} {options}: Dice {dice:.3f} after {steps} steps, {elapsed:.1f} s; bf16 agreement {agreement:.4f}")

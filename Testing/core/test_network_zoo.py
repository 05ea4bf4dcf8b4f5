"""The comparison networks (Table VI baselines, HNF-Netv2, HMEDN, FocusNet/FocusNetv2): output shapes
on odd crops, deep-supervision and auxiliary outputs, parameter counts against docs/networks.md,
blocks checked by hand against the papers' equations, and overfitting a phantom blob / sheet."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from brainbarriers.networks import ZOO, build
from brainbarriers.networks.blocks import ChannelSE, ConcurrentSE, SpatialSE
from brainbarriers.networks.complexity import count_macs, count_parameters
from brainbarriers.networks.focusnet import ShapeAutoencoder
from brainbarriers.networks.hmedn import DilatedResBlock
from brainbarriers.networks.hnfnet import EMA, IntraSDE
from brainbarriers.networks.inference import inference_context
from brainbarriers.networks.padding import pad_to_multiple, predict_padded
from brainbarriers_training.losses import DeepSupervisionLoss, DiceCELoss
from brainbarriers_training.losses_zoo import (
    DifficultyGuidedCELoss,
    FocusNetLoss,
    HMEDNLoss,
    ShapeAdversary,
    adversarial_step,
    contour_target,
    difficulty_weights,
)
from phantoms import dice as _dice
from phantoms import grid as _grid
from phantoms import image as _image
from phantoms import sheet as _sheet

REPO = Path(__file__).resolve().parents[2]

TINY_UNET = {"widths": (4, 8, 8, 8)}
TINY = {
    "unet3d": TINY_UNET,
    "res-unet3d": TINY_UNET,
    "unet3d-cse": TINY_UNET,
    "unet3d-sse": TINY_UNET,
    "unet3d-scse": TINY_UNET,
    "sepnet3d": {**TINY_UNET, "inter_slice_axis": 1},
    "focusnet": {"widths": (4, 8, 8, 8), "sos_width": 4, "roi_size": (8, 8, 8)},
    "focusnetv2": {"widths": (4, 8, 8), "sos_width": 4, "roi_size": (8, 8, 8)},
    "hnf-netv2": {"base_width": 4, "widths": (4, 8, 8, 8), "bases": 4},
    "hmedn": {"widths": (4, 4, 8, 8), "hr_width": 4},
}


def test_every_zoo_network_has_tiny_options():
    assert sorted(TINY) == sorted(ZOO)


# ---------------------------------------------------------------- shapes and outputs


@pytest.mark.parametrize("name", sorted(TINY))
def test_odd_crop_shapes(name):
    torch.manual_seed(0)
    options = dict(TINY[name])
    if name in ("unet3d", "res-unet3d", "unet3d-cse", "unet3d-sse", "unet3d-scse", "sepnet3d"):
        options["deep_supervision"] = True
    net = build(name, 3, 3, **options)
    x = torch.randn(1, 3, 13, 18, 21)
    net.eval()
    with torch.inference_mode():
        out = predict_padded(net, x)
    assert out.shape == (1, 3, 13, 18, 21) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    with inference_context("cpu", "bf16"):  # the pipeline's "auto" precision on bf16-capable CPUs
        low = predict_padded(net, x)
    assert low.shape == out.shape and low.dtype == torch.float32 and torch.isfinite(low).all()
    net.train()
    padded, _ = pad_to_multiple(x, net.required_multiple)
    outs = net(padded)
    if name == "hnf-netv2":  # no deep supervision in the paper: one tensor, as in eval mode
        assert isinstance(outs, torch.Tensor)
        outs = [outs]
    assert isinstance(outs, list)
    full = padded.shape[2:]
    assert outs[0].shape == (1, 3, *full)
    # the four-level tiny U-Nets decode at full, 1/2 and 1/4; HMEDN's side outputs at 1/2, 1/4
    expected = {"hmedn": 3, "focusnet": 1, "focusnetv2": 1, "hnf-netv2": 1}.get(name, 3)
    assert len(outs) == expected
    for k, o in enumerate(outs[1:], start=1):  # deep supervision: 1/2, 1/4, 1/8 (sepnet3d keeps one axis)
        assert o.shape[:2] == (1, 3)
        assert all(f // o.shape[2 + d] in (2 ** (k - 1), 2**k) for d, f in enumerate(full)), (o.shape, full)
    aux = getattr(outs, "aux", {})
    if name == "hmedn":
        assert aux["contour"].shape == (1, 1, *full)
        assert aux["hr"].shape == (1, 3, *[f // 2 for f in full])
    elif name.startswith("focusnet"):
        assert aux["heatmap"].shape == (1, 2, *full)  # classes 1 and 2 are "small" by default
        assert [s.shape for s in aux["sos"]] == [(1, 1, 8, 8, 8)] * 2
        assert aux["roi_starts"].shape == (1, 2, 3)
    else:
        assert aux == {}


def test_table_vi_baselines_have_no_deep_supervision_by_default():
    for name in ("unet3d", "res-unet3d", "unet3d-scse", "sepnet3d", "hnf-netv2"):
        net = build(name, 3, 2, **TINY[name]).train()
        x = torch.randn(1, 3, 32, 32, 32)
        assert isinstance(net(x), torch.Tensor)


def test_sepnet_pools_in_plane_first_and_never_mixes_slices_in_its_intra_convs():
    net = build("sepnet3d", 3, 2, inter_slice_axis=2)
    assert net.required_multiple == (16, 16, 8)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv3d) and m.kernel_size != (1, 1, 1):
            assert m.kernel_size in ((3, 3, 1), (1, 1, 3))


def test_unknown_options_and_names():
    with pytest.raises(TypeError):
        build("unet3d", 3, 2, inter_slice_axis=1)  # a sepnet3d option
    with pytest.raises(TypeError):
        build("unet3d-cse", 3, 2, attention="sse")  # fixed by the name
    with pytest.raises(TypeError):
        build("hmedn", 3, 2, bases=4)
    with pytest.raises(ValueError):
        build("focusnetv2", 3, 2, small_classes=(2,))
    # recipes are JSON: lists are accepted where tuples are meant
    assert build("unet3d", 3, 2, widths=[4, 8]).required_multiple == (2, 2, 2)


def test_focusnet_paste_makes_the_small_class_probability_the_sos_sigmoid():
    torch.manual_seed(0)
    net = build("focusnetv2", 3, 3, **TINY["focusnetv2"]).eval()
    x = torch.randn(1, 3, 16, 16, 16)
    with torch.no_grad():
        feats = net.snet(x)
        logits = net.head(feats)
        starts = torch.tensor([[[0, 2, 4], [8, 8, 8]]])
        out = net(x, starts=starts)
        inputs = torch.cat([feats, x], 1)
        sos1 = net.sos[0](inputs[:, :, 0:8, 2:10, 4:12])
    p = torch.softmax(out, 1)
    torch.testing.assert_close(p[0, 1, 0:8, 2:10, 4:12], torch.sigmoid(sos1[0, 0]), rtol=1e-5, atol=1e-6)
    outside = torch.ones(16, 16, 16, dtype=torch.bool)
    outside[0:8, 2:10, 4:12] = False
    outside[8:16, 8:16, 8:16] = False
    torch.testing.assert_close(out[0][:, outside], logits[0][:, outside])


# ---------------------------------------------------------------- parameter counts (docs/networks.md)


def _doc_table() -> dict[str, tuple[int, str]]:
    rows = {}
    for line in (REPO / "docs" / "networks.md").read_text().splitlines():
        m = re.match(r"\|\s*`([a-z0-9-]+)`\s*\|\s*([\d,]+)\s*\|\s*([^|]+)\|", line)
        if m:
            rows[m.group(1)] = (int(m.group(2).replace(",", "")), m.group(3).strip())
    return rows


def test_parameter_counts_match_the_table():
    rows = _doc_table()
    assert set(ZOO) <= set(rows)
    for name in ZOO:
        ours, paper = rows[name]
        assert count_parameters(build(name, 3, 2)) == ours, name
        m = re.match(r"([\d.]+) M", paper)
        if m:  # near the paper's count where it gives one
            assert abs(ours / 1e6 - float(m.group(1))) / float(m.group(1)) < 0.1, (name, ours, paper)


def test_mac_counter_by_hand():
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 5, 3, padding=1), torch.nn.ConvTranspose3d(5, 2, 2, stride=2))
    # conv: every output voxel 3*27 MACs per channel; transposed: every input voxel 2*8 per channel
    assert count_macs(net, (4, 6, 8)) == 5 * 192 * 3 * 27 + 5 * 192 * 2 * 8


# ---------------------------------------------------------------- blocks by hand


def test_ema_e_and_m_steps_by_hand():
    torch.manual_seed(0)
    c, k, n_vox = 3, 2, 5
    ema = EMA(c, bases=k, iterations=1)
    x = torch.randn(1, c, n_vox, dtype=torch.float64)
    mu = F.normalize(torch.randn(1, c, k, dtype=torch.float64), dim=1)
    z, mu_new = ema.em(x, mu)
    for i in range(n_vox):  # E step: z_ik = exp(x_i . mu_k) / sum_j exp(x_i . mu_j)
        scores = [sum(x[0, ch, i] * mu[0, ch, kk] for ch in range(c)) for kk in range(k)]
        denom = sum(torch.exp(s) for s in scores)
        for kk in range(k):
            assert abs(float(z[0, i, kk] - torch.exp(scores[kk]) / denom)) < 1e-12
    for kk in range(k):  # M step: mu_k = sum_i z_ik x_i / sum_i z_ik, then unit length
        weight = sum(z[0, i, kk] for i in range(n_vox))
        m = [sum(z[0, i, kk] * x[0, ch, i] for i in range(n_vox)) / (1e-6 + weight) for ch in range(c)]
        norm = sum(v * v for v in m) ** 0.5
        for ch in range(c):
            assert abs(float(mu_new[0, ch, kk] - m[ch] / norm)) < 1e-12
    # the module reconstructs X~ = mu Z^T from the final bases, and learns its initial bases by a moving average
    ema.train()
    before = ema.mu.clone()
    ema(torch.randn(2, c, 2, 2, 2))
    assert not torch.equal(before, ema.mu)
    torch.testing.assert_close(ema.mu.norm(dim=1), torch.ones(1, k))


def test_intra_sde_reweighting_by_hand():
    torch.manual_seed(0)
    sde = IntraSDE(4, reduction=2)
    x = torch.randn(2, 4, 3, 4, 5)
    g = x.mean((2, 3, 4))  # global average pooling
    w1, b1 = sde.fc1.weight[:, :, 0, 0, 0], sde.fc1.bias
    w2, b2 = sde.fc2.weight[:, :, 0, 0, 0], sde.fc2.bias
    s = torch.sigmoid(torch.relu(g @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(sde(x), x * s[:, :, None, None, None])


def test_squeeze_excitation_blocks_by_hand():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 3, 3, 3)
    cse, sse, scse = ChannelSE(4), SpatialSE(4), ConcurrentSE(4)
    scse.cse.load_state_dict(cse.state_dict())
    scse.sse.load_state_dict(sse.state_dict())
    g = x.mean((2, 3, 4))
    s = torch.sigmoid(torch.relu(g @ cse.fc1.weight[:, :, 0, 0, 0].T + cse.fc1.bias) @ cse.fc2.weight[:, :, 0, 0, 0].T
                      + cse.fc2.bias)
    want_c = x * s[:, :, None, None, None]
    q = torch.sigmoid(torch.einsum("c,ncxyz->nxyz", sse.conv.weight.flatten(), x) + sse.conv.bias)
    want_s = x * q[:, None]
    torch.testing.assert_close(cse(x), want_c)
    torch.testing.assert_close(sse(x), want_s)
    torch.testing.assert_close(scse(x), torch.maximum(want_c, want_s))


def _dilated_conv_by_hand(x, w, b, d):
    """HMEDN eq. 1 in 3D: O(v) = sum_{a,b,c in {-1,0,1}} sum_l w[:, l, a, b, c] X(v + d(a, b, c), l), zero outside."""
    n, cin, *shape = x.shape
    out = b.view(1, -1, 1, 1, 1).expand(n, -1, *shape).clone()
    xp = F.pad(x, [d] * 6)
    for a in range(3):
        for bb in range(3):
            for c in range(3):
                patch = xp[:, :, a * d:a * d + shape[0], bb * d:bb * d + shape[1], c * d:c * d + shape[2]]
                out += torch.einsum("ol,nlxyz->noxyz", w[:, :, a, bb, c], patch)
    return out


def _instance_norm(x, weight, bias, eps=1e-5):
    mean = x.mean((2, 3, 4), keepdim=True)
    var = x.var((2, 3, 4), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight.view(1, -1, 1, 1, 1) + bias.view(1, -1, 1, 1, 1)


def test_hmedn_residual_dilated_block_by_hand():
    torch.manual_seed(0)
    block = DilatedResBlock(3, dilation=2).double()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(1, 3, 5, 6, 7, dtype=torch.float64)
    c1, n1 = block.unit1[0], block.unit1[1]
    c2, n2 = block.unit2[0], block.unit2[1]
    h = torch.relu(_instance_norm(_dilated_conv_by_hand(x, c1.weight, c1.bias, 2), n1.weight, n1.bias))
    want = torch.relu(x + _instance_norm(_dilated_conv_by_hand(h, c2.weight, c2.bias, 2), n2.weight, n2.bias))
    torch.testing.assert_close(block(x), want)


def test_difficulty_guided_ce_by_hand():
    labels = torch.zeros(1, 12, 12, 12, dtype=torch.long)
    labels[0, 3:9, 3:9, 3:9] = 1
    w = difficulty_weights(labels, 2, mu0=1.0, mu=25.0, sigma=1.0)
    # boundary voxels of the cube get (close to) the full 1 + 25, far background 1
    assert abs(float(w.max()) - 26.0) < 1e-4 and abs(float(w[0, 0, 0, 0]) - 1.0) < 1e-4
    assert float(w[0, 3, 5, 5]) > float(w[0, 5, 5, 5]) > float(w[0, 0, 0, 0])
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 12, 12, 12)
    loss = DifficultyGuidedCELoss(sigma=1.0)(logits, labels)
    logp = torch.log_softmax(logits, 1).gather(1, labels[:, None])[:, 0]
    torch.testing.assert_close(loss, -(w * logp).mean())
    goal = contour_target(labels, 2, sigma=1.0)
    assert float(goal.max()) == pytest.approx(1.0) and float(goal[0, 0, 0, 0]) < 1e-3


# ---------------------------------------------------------------- overfitting phantoms


def _blob(size=16):
    z, y, x = _grid((size,) * 3)
    c = size / 2 - 0.5
    r = ((z - c) ** 2 + (y - c - 0.5) ** 2 / 1.5 + (x - c) ** 2) ** 0.5
    return (r < 0.28 * size).long()


def _overfit(net, step, x, label, max_steps=150):
    """Train until the eval-mode Dice exceeds 0.9 (checked every 10 steps); return (dice, steps)."""
    dice, done = 0.0, 0
    while done < max_steps:
        net.train()
        for _ in range(10):
            step()
        done += 10
        net.eval()
        with torch.no_grad():
            dice = _dice(predict_padded(net, x).argmax(1)[0], label)
        if dice > 0.9:
            break
    return dice, done


OVERFIT = [
    ("unet3d", {}, "blob", None),
    ("res-unet3d", {}, "blob", None),
    ("unet3d-cse", {}, "blob", None),
    ("unet3d-sse", {}, "blob", None),
    ("unet3d-scse", {}, "blob", None),
    ("sepnet3d", {"inter_slice_axis": 0}, "blob", None),
    ("sepnet3d", {"inter_slice_axis": 2}, "sheet", None),
    ("hmedn", {}, "blob", "hmedn"),
    ("hmedn", {}, "sheet", "hmedn"),
    ("focusnet", {}, "blob", "focus"),
    ("focusnetv2", {"roi_size": (12, 12, 12)}, "blob", "adversarial"),
    ("hnf-netv2", {}, "blob", None),
]


@pytest.mark.parametrize("name,extra,phantom,loss_kind", OVERFIT, ids=[f"{o[0]}-{o[2]}" for o in OVERFIT])
def test_overfit(name, extra, phantom, loss_kind):
    torch.manual_seed(0)
    size = 32 if name == "hnf-netv2" else 16  # HNF-Net's 1/16 branch needs more than one voxel
    label = _blob(size) if phantom == "blob" else _sheet(extra.get("inter_slice_axis", 0), size)
    x = _image(label)
    target = label[None, None]
    net = build(name, 3, 2, **{**TINY[name], **extra})
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    if loss_kind == "hmedn":
        loss = HMEDNLoss(DifficultyGuidedCELoss(sigma=2.0))
    elif loss_kind in ("focus", "adversarial"):
        loss = FocusNetLoss()
    else:
        loss = DeepSupervisionLoss(DiceCELoss())

    if loss_kind == "adversarial":
        adversary = ShapeAdversary(ShapeAutoencoder((4, 4)))
        opt_d = torch.optim.Adam(adversary.aae.parameters(), lr=1e-3)

        def step():
            adversarial_step(net, loss, adversary, opt, opt_d, x, target)
    else:

        def step():
            opt.zero_grad()
            loss(net(x), target).backward()
            opt.step()

    dice, steps = _overfit(net, step, x, label)
    assert dice > 0.9, (dice, steps)
    print(f"{name} {phantom}: Dice {dice:.3f} after {steps} steps")


def test_adversarial_step_updates_each_side_on_its_own_loss():
    """G steps on L_seg + lambda1 L_shape, D on L_rec - lambda2 L_shape of the same predictions, and
    neither update leaks gradients into the other side."""
    import copy

    torch.manual_seed(0)
    label = _blob()
    x, target = _image(label), label[None, None]
    net = build("focusnetv2", 3, 2, **{**TINY["focusnetv2"], "roi_size": (8, 8, 8)})
    adversary = ShapeAdversary(ShapeAutoencoder((4, 4)))
    net0, aae0 = copy.deepcopy(net), copy.deepcopy(adversary.aae)
    opt_g = torch.optim.SGD(net.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(adversary.aae.parameters(), lr=0.1)
    loss = FocusNetLoss()
    adversarial_step(net, loss, adversary, opt_g, opt_d, x, target)

    # expected G update: gradient of L_seg + 5 L_shape with the autoencoder as it was
    ref_adv = ShapeAdversary(copy.deepcopy(aae0))
    net0.train()
    out0 = net0(x)
    (loss(out0, target) + ref_adv.generator_term(out0, target)).backward()
    for p, p0 in zip(net.parameters(), net0.parameters()):
        want = p0.detach() - 0.1 * (p0.grad if p0.grad is not None else 0)
        torch.testing.assert_close(p.detach(), want, rtol=1e-4, atol=1e-6)
    # expected D update: gradient of L_rec - 0.001 L_shape alone, from the same predictions
    ref_adv.aae.zero_grad()
    ref_adv.discriminator_loss(out0, target).backward()
    for p, p0 in zip(adversary.aae.parameters(), ref_adv.aae.parameters()):
        torch.testing.assert_close(p.detach(), p0.detach() - 0.1 * p0.grad, rtol=1e-4, atol=1e-6)


def test_pipeline_knows_which_networks_take_an_inter_slice_axis():
    from brainbarriers.bundles.manifest import SLICE_AXIS_NETWORKS, fine_network
    from brainbarriers.networks import NAMES

    for name in NAMES:
        if name in SLICE_AXIS_NETWORKS:
            build(name, 3, 2, inter_slice_axis=1)
        else:
            with pytest.raises(TypeError):
                build(name, 3, 2, inter_slice_axis=1)
    # a thin target's spec carries the axis only for a network that takes it, so any network builds
    for name in ("hmrnet-s", "sepnet3d", "hmedn", "unet3d"):
        spec = fine_network("falx", {}, name)
        assert ("inter_slice_axis" in spec["options"]) == (name in SLICE_AXIS_NETWORKS)
        build(spec["architecture"], spec["in_channels"], spec["out_channels"], **spec["options"])

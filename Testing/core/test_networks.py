"""Networks: shapes through the padding helper, parameter counts, one BFC by hand, HMRNet-s
receptive field per axis."""

import pytest
import torch
from brainbarriers.networks import build
from brainbarriers.networks.blocks import BFC
from brainbarriers.networks.padding import pad_to_multiple, predict_padded
from torch import nn

SMALL = {"hr_width": 2, "mr_widths": (4, 4, 8, 8)}


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    "name,options",
    [("hmrnet-p", SMALL), ("hmrnet-s", {**SMALL, "inter_slice_axis": 0}),
     ("hmrnet-s", {**SMALL, "inter_slice_axis": 2}), ("coarse-unet", {"base_width": 4, "max_width": 8})],
)
def test_odd_crop_shapes(name, options):
    torch.manual_seed(0)
    net = build(name, 3, 2, **options)
    x = torch.randn(1, 3, 13, 18, 21)
    net.eval()
    with torch.inference_mode():
        out = predict_padded(net, x)
    assert out.shape == (1, 2, 13, 18, 21)
    net.train()
    padded, _ = pad_to_multiple(x, net.required_multiple)
    outs = net(padded)
    assert isinstance(outs, list) and len(outs) == 4
    full = padded.shape[2:]
    assert outs[0].shape[2:] == full
    for k, o in enumerate(outs[1:], start=1):
        # each deep-supervision output is a factor 2**k smaller, except where -s does not pool
        assert all(f // o.shape[2 + d] in (2 ** (k - 1), 2**k) for d, f in enumerate(full))
        assert o.shape[1] == 2


def test_pad_to_multiple_roundtrip():
    x = torch.arange(5 * 6 * 7, dtype=torch.float32).reshape(1, 1, 5, 6, 7)
    padded, crop = pad_to_multiple(x, (4, 8, 1))
    assert padded.shape[2:] == (8, 8, 7)
    assert torch.equal(padded[crop], x)


def test_required_multiple():
    assert build("hmrnet-p", 3, 2).required_multiple == (8, 8, 8)
    for axis in range(3):
        m = build("hmrnet-s", 3, 2, inter_slice_axis=axis).required_multiple
        assert m == tuple(4 if d == axis else 8 for d in range(3))
    assert build("coarse-unet", 3, 7).required_multiple == (16, 16, 16)


def test_unknown_option():
    with pytest.raises(TypeError):
        build("hmrnet-p", 3, 2, inter_slice_axis=1)
    with pytest.raises(TypeError):
        build("coarse-unet", 3, 7, hr_width=4)
    with pytest.raises(ValueError):
        build("hmrnet-x", 3, 2)


def test_parameter_counts():
    # Published: 3.12 M (release, HR 8) and 3.4 M (paper, i.e. HR 16).
    assert n_params(build("hmrnet-p", 3, 2)) == 3_105_900
    assert n_params(build("hmrnet-p", 3, 2, hr_width=16)) == 3_381_988
    assert n_params(build("hmrnet-s", 3, 2)) == 2_364_924


def _up2_matrix(n: int) -> torch.Tensor:
    """Trilinear (align_corners=False) x2 up-sampling along one axis, written out by hand."""
    m = torch.zeros(2 * n, n)
    for i in range(2 * n):
        src = min(max((i + 0.5) / 2 - 0.5, 0.0), n - 1)
        lo = int(src)
        hi = min(lo + 1, n - 1)
        m[i, lo] += 1 - (src - lo)
        m[i, hi] += src - lo
    return m


def test_bfc_by_hand():
    torch.manual_seed(1)
    c_h, c_m = 2, 3
    bfc = BFC(c_h, c_m, post_conv=False)
    with torch.no_grad():
        for p in bfc.parameters():
            p.copy_(torch.randn_like(p))
    f_h = torch.randn(1, c_h, 4, 4, 4)
    f_m = torch.randn(1, c_m, 2, 2, 2)
    u = _up2_matrix(2)
    up_m = torch.einsum("cijk,ai,bj,dk->cabd", f_m[0], u, u, u)
    down_h = f_h[0].reshape(c_h, 2, 2, 2, 2, 2, 2).mean(dim=(2, 4, 6))
    w_h, b_h = bfc.att_h.weight.flatten(), bfc.att_h.bias
    w_m, b_m = bfc.att_m.weight.flatten(), bfc.att_m.bias
    alpha_h = torch.sigmoid(torch.einsum("c,cxyz->xyz", w_h, up_m) + b_h)
    alpha_m = torch.sigmoid(torch.einsum("c,cxyz->xyz", w_m, down_h) + b_m)
    want_h = alpha_h * torch.cat([f_h[0], up_m])
    want_m = alpha_m * torch.cat([f_m[0], down_h])
    got_h, got_m = bfc(f_h, f_m)
    torch.testing.assert_close(got_h[0], want_h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_m[0], want_m, rtol=1e-5, atol=1e-6)
    # with the post-concat conv block, the output is that block applied to the calibrated concat
    bfc2 = BFC(c_h, c_m, post_conv=True)
    bfc2.att_h.load_state_dict(bfc.att_h.state_dict())
    bfc2.att_m.load_state_dict(bfc.att_m.state_dict())
    got_h2, got_m2 = bfc2(f_h, f_m)
    torch.testing.assert_close(got_h2, bfc2.post_h(want_h[None]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_m2, bfc2.post_m(want_m[None]), rtol=1e-5, atol=1e-6)


def _affected_extent(net: nn.Module, shape: tuple[int, int, int]) -> list[int]:
    """Per spatial axis, the extent of output voxels changed by perturbing the centre input voxel."""
    torch.manual_seed(3)
    x = torch.randn(1, 3, *shape, dtype=torch.float64)
    y = x.clone()
    y[(0, slice(None)) + tuple(n // 2 for n in shape)] += 50.0
    with torch.no_grad():
        diff = (net(x) - net(y)).abs().sum(1)[0]
    idx = (diff > 0).nonzero()
    return [int(idx[:, d].max() - idx[:, d].min() + 1) for d in range(3)]


def _convolutional_only(net: nn.Module) -> nn.Module:
    """InstanceNorm couples all voxels through its statistics; drop it to see the conv receptive field.

    Without normalisation, gain-preserving (He) weights in float64 keep a perturbation far above
    rounding noise through the ~80 layers.
    """
    for m in net.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, a=0.01, nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)
    for mod in list(net.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.InstanceNorm3d):
                setattr(mod, child_name, nn.Identity())
    return net.double().eval()


def _inter_convs(net: nn.Module, axis: int) -> list[nn.Conv3d]:
    k = tuple(3 if d == axis else 1 for d in range(3))
    return [m for m in net.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == k]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hmrnet_s_receptive_field(axis):
    torch.manual_seed(2)
    opts = {"hr_width": 2, "mr_widths": (2, 2, 2, 2), "activation": "leaky_relu"}
    net = _convolutional_only(build("hmrnet-s", 3, 2, inter_slice_axis=axis, **opts))
    # every conv either keeps slices apart (size 1 along the axis) or is a 1x1x3 inter-slice conv
    for m in net.modules():
        if isinstance(m, nn.Conv3d) and m.kernel_size[axis] != 1:
            assert m.kernel_size == tuple(3 if d == axis else 1 for d in range(3))
    inter = _inter_convs(net, axis)
    assert len(inter) == 2 * (14 + 2 * 6)  # two per conv block: 7 HR + 7 MR blocks, two per BFC
    shape = tuple(48 if d == axis else 16 for d in range(3))
    full = _affected_extent(net, shape)
    # silence the across-slice taps of the 1x1x3 convs: growth across slices must (almost) vanish
    with torch.no_grad():
        for m in inter:
            keep = m.weight.narrow(2 + axis, 1, 1).clone()
            m.weight.zero_()
            m.weight.narrow(2 + axis, 1, 1).copy_(keep)
    centre_only = _affected_extent(net, shape)
    others = [d for d in range(3) if d != axis]
    assert all(full[d] == 16 for d in others) and all(centre_only[d] == 16 for d in others)
    # what is left across slices comes only from max-pooling / trilinear up-sampling / avg-pooling
    # between the branches; the 1x1x3 convolutions are what makes the receptive field grow
    assert centre_only[axis] <= 16, centre_only
    assert full[axis] >= 2 * centre_only[axis], (full, centre_only)
    p_net = _convolutional_only(build("hmrnet-p", 3, 2, **opts))
    assert _affected_extent(p_net, shape)[axis] > centre_only[axis]


@pytest.mark.parametrize("name,options", [("hmrnet-p", {}), ("hmrnet-s", {"inter_slice_axis": 0}),
                                          ("hmrnet-s", {"inter_slice_axis": 2, "post_conv": True})])
def test_fast_inference_path_is_exact(name, options):
    # float64: the rewrite is exact algebra; fp32 rounding alone is amplified by the many InstanceNorms
    torch.manual_seed(0)
    net = build(name, 3, 2, hr_width=4, mr_widths=(8, 8, 16, 32), **options).double().eval()
    x = torch.randn(1, 3, 16, 24, 16, dtype=torch.float64)
    with torch.no_grad():
        net.fast_inference = False
        plain = net(x)
        net.fast_inference = True
        fast = net(x)
    with torch.inference_mode():
        fast_inf = net(x)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-7)
    torch.testing.assert_close(fast_inf, plain, rtol=0, atol=1e-7)

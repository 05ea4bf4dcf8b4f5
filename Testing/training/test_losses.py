"""Losses: fn-weighted Dice at theta=1 is 1 - Dice, FN gradient grows with theta, deep supervision
with thin-structure-preserving target down-sampling."""

import pytest
import torch
import torch.nn.functional as F
from brainbarriers_training.losses import DeepSupervisionLoss, DiceCELoss, FNDiceCELoss, downsample_labels


def _case(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 2, 6, 7, 8, generator=g)
    target = (torch.rand(2, 1, 6, 7, 8, generator=g) > 0.6).long()
    return logits, target


def test_fn_dice_theta_one_is_dice():
    logits, target = _case()
    p = torch.softmax(logits, 1)[:, 1]
    g = target[:, 0].float()
    dice = 2 * (p * g).sum() / (p.sum() + g.sum())
    loss = FNDiceCELoss(theta=1.0, eps=0.0).dice_loss(logits, target)
    torch.testing.assert_close(loss, 1 - dice)
    torch.testing.assert_close(DiceCELoss(eps=0.0).dice_loss(logits, target), 1 - dice)
    # the full loss adds cross-entropy 1:1
    torch.testing.assert_close(FNDiceCELoss(1.0, eps=0.0)(logits, target), 1 - dice + F.cross_entropy(logits, target[:, 0]))


def test_fn_dice_formula():
    logits, target = _case(1)
    p = torch.softmax(logits, 1)[:, 1]
    g = target[:, 0].float()
    tp, fp, fn = (p * g).sum(), (p * (1 - g)).sum(), ((1 - p) * g).sum()
    theta, eps = 2.5, 1e-5
    want = 1 - (2 * tp + eps) / (2 * tp + fp + theta * fn + eps)
    torch.testing.assert_close(FNDiceCELoss(theta, eps=eps).dice_loss(logits, target), want)


def _fn_and_fp_pull(logits, target, theta):
    x = logits.clone().requires_grad_(True)
    FNDiceCELoss(theta, ce_weight=0.0).dice_loss(x, target).backward()
    pred = logits.argmax(1)
    fn_voxels = target[:, 0].bool() & (pred == 0)
    fp_voxels = ~target[:, 0].bool() & (pred == 1)
    # descent direction on the foreground logit: push up on missed voxels, down on false alarms
    return float(-x.grad[:, 1][fn_voxels].mean()), float(x.grad[:, 1][fp_voxels].mean())


def test_fn_gradient_grows_with_theta():
    # a mostly right prediction of a box with a missed corner and a few false alarms
    target = torch.zeros(1, 1, 12, 12, 12, dtype=torch.long)
    target[:, :, 2:10, 2:10, 2:10] = 1
    logits = torch.zeros(1, 2, 12, 12, 12)
    logits[:, 1] = torch.where(target[:, 0].bool(), 2.0, -2.0)
    logits[:, 1, 2:5, 2:5, 2:5] = -1.0  # false negatives
    logits[:, 1, 10:, 10:, :3] = 1.0  # false positives
    pulls = [_fn_and_fp_pull(logits, target, theta) for theta in (1.0, 1.5, 2.0, 3.0, 3.5)]
    fn = [a for a, _ in pulls]
    assert fn[0] > 0
    assert all(b > a for a, b in zip(fn, fn[1:])), pulls
    # on any prediction the FN gradient grows relative to the FP gradient, (FP + theta*G) / TP
    logits, target = _case(2)
    ratios = [a / b for a, b in (_fn_and_fp_pull(logits, target, t) for t in (1.0, 2.0, 3.0, 5.0))]
    assert all(b > a for a, b in zip(ratios, ratios[1:])), ratios


def test_background_excluded_and_multiclass():
    torch.manual_seed(0)
    target = torch.randint(0, 4, (1, 8, 8, 8))
    perfect = F.one_hot(target, 4).movedim(-1, 1).float() * 50
    assert float(DiceCELoss().dice_loss(perfect, target)) < 1e-4
    # background only correct: foreground-only Dice is bad, with background it is less bad
    bg_only = torch.zeros(1, 4, 8, 8, 8)
    bg_only[:, 0] = 50
    assert float(DiceCELoss().dice_loss(bg_only, target)) > 0.99
    assert float(DiceCELoss(include_background=True).dice_loss(bg_only, target)) < 0.99


def test_deep_supervision_weights():
    torch.manual_seed(0)
    target = torch.randint(0, 2, (1, 1, 16, 16, 16))
    outs = [torch.randn(1, 2, 16 // 2**k, 16 // 2**k, 16 // 2**k) for k in range(4)]
    base = DiceCELoss()
    total = DeepSupervisionLoss(base)(outs, target)
    parts = [base(o, downsample_labels(target, o.shape[2:])) for o in outs]
    torch.testing.assert_close(total, parts[0] + 0.4 * parts[1] + 0.3 * parts[2] + 0.3 * parts[3])
    torch.testing.assert_close(DeepSupervisionLoss(base)(outs[0], target[:, 0]), parts[0])
    assert downsample_labels(target, (8, 8, 8)).shape == (1, 1, 8, 8, 8)
    assert downsample_labels(target[:, 0], (8, 8, 8)).shape == (1, 8, 8, 8)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("position", [0, 3, 5, 7])
def test_one_voxel_sheet_survives_to_one_eighth(axis, position):
    target = torch.zeros(1, 1, 32, 32, 32, dtype=torch.long)
    index = [slice(None)] * 5
    index[2 + axis] = 8 + position  # anywhere inside the second 8-voxel cell along ``axis``
    target[tuple(index)] = 1
    for factor in (2, 4, 8):
        small = downsample_labels(target, (32 // factor,) * 3)[0, 0]
        cells = [slice(None)] * 3
        cells[axis] = (8 + position) // factor
        assert bool(small[tuple(cells)].all()), (factor, axis, position)
        assert int(small.sum()) == (32 // factor) ** 2  # one cell thick, nothing else
    # nearest sampling (every 8th slice) would have lost the sheet unless it sat on a sampled slice
    assert position == 0 or int(target[0, 0, ::8, ::8, ::8].sum()) == 0


def test_downsampled_class_is_the_majority_foreground_and_sizes_need_not_divide():
    target = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    target[0, 0, :, :, :3] = 2  # 3 of 8 columns class 2, one of class 5, the rest background
    target[0, 0, :, :, 3] = 5
    small = downsample_labels(target, (1, 1, 1))
    assert small.dtype == torch.long and small.tolist() == [[[[[2]]]]]
    only_thin = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    only_thin[0, 0, 4] = 5
    assert downsample_labels(only_thin, (1, 1, 1)).item() == 5
    odd = downsample_labels(target, (3, 5, 3))
    assert odd.shape == (1, 1, 3, 5, 3) and set(odd.unique().tolist()) <= {0, 2, 5}


def test_bad_target_shape():
    logits, target = _case()
    with pytest.raises(ValueError):
        DiceCELoss()(logits, target[:, :, :3])

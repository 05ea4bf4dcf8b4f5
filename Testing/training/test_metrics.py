"""The surface metrics equal MONAI's reference implementation on fixed masks."""

import numpy as np
import pytest
import torch
from brainbarriers_training.metrics import all_metrics, dice
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice


def _ball(shape, centre, radii):
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return ((k - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 + ((i - centre[2]) / radii[2]) ** 2 <= 1


def _cases():
    shape = (40, 44, 36)
    a = _ball(shape, (20, 22, 18), (10, 12, 8))
    b = _ball(shape, (22, 21, 19), (9, 13, 8))
    sheet_gt = np.zeros(shape, bool)
    sheet_gt[5:35, 8:40, 17:19] = True
    sheet_pred = np.zeros(shape, bool)
    sheet_pred[7:36, 6:38, 18:21] = True
    sheet_pred[3, 3, 3] = True  # a stray voxel far away
    return [(a, b, (1.0, 1.0, 1.0)), (a, b, (2.0, 1.2, 0.8)), (sheet_pred, sheet_gt, (1.2, 1.2, 1.2))]


@pytest.mark.parametrize("pred,gt,spacing", _cases())
def test_metrics_match_monai(pred, gt, spacing):
    ours = all_metrics(pred, gt, spacing, tolerance_mm=2.0)
    p = torch.from_numpy(np.stack([~pred, pred])[None].astype(np.float32))
    g = torch.from_numpy(np.stack([~gt, gt])[None].astype(np.float32))
    hd95 = compute_hausdorff_distance(p, g, include_background=False, percentile=95, spacing=spacing)
    assd = compute_average_surface_distance(p, g, include_background=False, symmetric=True, spacing=spacing)
    nsd = compute_surface_dice(p, g, class_thresholds=[2.0], include_background=False, spacing=spacing)
    assert ours["hd95"] == pytest.approx(float(hd95), rel=1e-5, abs=1e-5)
    assert ours["assd"] == pytest.approx(float(assd), rel=1e-5, abs=1e-5)
    assert ours["surface_dice"] == pytest.approx(float(nsd), rel=1e-5, abs=1e-5)
    inter = (pred & gt).sum()
    assert ours["dice"] == pytest.approx(2 * inter / (pred.sum() + gt.sum()))


def test_misses_and_false_structures_are_counted_with_a_penalty():
    z = np.zeros((5, 6, 7), bool)
    o = z.copy()
    o[2, 2, 2] = True
    assert dice(z, z) == 1.0 and dice(o, z) == 0.0
    diagonal = float(np.sqrt((5 * 2.0) ** 2 + 6**2 + 7**2))
    missed = all_metrics(z, o, (2.0, 1.0, 1.0))
    assert missed == {"dice": 0.0, "assd": pytest.approx(diagonal), "hd95": pytest.approx(diagonal),
                      "surface_dice": 0.0, "outcome": "missed"}
    false = all_metrics(o, z, (1, 1, 1), penalty_mm=50.0)
    assert false["outcome"] == "false structure" and false["assd"] == 50.0 and false["dice"] == 0.0
    assert all_metrics(z, z, (1, 1, 1))["outcome"] == "both empty"

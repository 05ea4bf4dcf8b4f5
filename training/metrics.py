"""Overlap and surface metrics per structure: Dice, ASSD, HD95, surface Dice at a tolerance.

The surface metrics are MONAI's (``monai.metrics``), run on the two masks cropped to their joint
bounding box plus one voxel (the distances do not change; the work shrinks to the structure).

A missed structure (empty prediction, non-empty truth) or a false one (the reverse) is counted, not
dropped: Dice 0, surface Dice 0, and ASSD and HD95 set to the penalty (by default the diagonal of
the image in mm, the largest distance the image can hold); its ``outcome`` names it. Two empty masks
score Dice 1 and distances 0 (nothing to find, nothing found).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

OUTCOMES = ("found", "missed", "false structure", "both empty")


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """2|P∩G| / (|P|+|G|); 1.0 when both are empty."""
    p, g = pred.astype(bool), gt.astype(bool)
    total = int(p.sum()) + int(g.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(p, g).sum()) / total


def diagonal_mm(shape: tuple[int, ...], spacing) -> float:
    """Length of the image diagonal in mm (the default distance penalty)."""
    return float(np.linalg.norm(np.array(shape, float) * np.array(spacing, float)))


def _crop(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to their joint bounding box, padded by one background voxel."""
    union = pred | gt
    sl = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        nz = np.flatnonzero(union.any(axis=other))
        sl.append(slice(nz[0], nz[-1] + 1))
    return np.pad(pred[tuple(sl)], 1), np.pad(gt[tuple(sl)], 1)


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))


def surface_metrics(pred: np.ndarray, gt: np.ndarray, spacing, tolerance_mm: float = 2.0) -> dict[str, float]:
    """MONAI's ASSD (symmetric), HD95 and surface Dice of two non-empty masks."""
    p, g = _crop(pred.astype(bool), gt.astype(bool))
    yp, yg = _one_hot(p), _one_hot(g)
    spacing = [float(s) for s in spacing]
    return {
        "assd": float(compute_average_surface_distance(yp, yg, include_background=False, symmetric=True,
                                                       spacing=spacing)),
        "hd95": float(compute_hausdorff_distance(yp, yg, include_background=False, percentile=95, spacing=spacing)),
        "surface_dice": float(compute_surface_dice(yp, yg, class_thresholds=[tolerance_mm], include_background=False,
                                                   spacing=spacing)),
    }


def all_metrics(pred: np.ndarray, gt: np.ndarray, spacing, tolerance_mm: float = 2.0,
                penalty_mm: float | None = None) -> dict:
    """Dice, ASSD, HD95 (mm), surface Dice and the outcome of one structure (see the module docstring)."""
    p, g = pred.astype(bool), gt.astype(bool)
    if not p.any() and not g.any():
        return {"dice": 1.0, "assd": 0.0, "hd95": 0.0, "surface_dice": 1.0, "outcome": "both empty"}
    if not p.any() or not g.any():
        penalty = diagonal_mm(p.shape, spacing) if penalty_mm is None else float(penalty_mm)
        return {"dice": 0.0, "assd": penalty, "hd95": penalty, "surface_dice": 0.0,
                "outcome": "missed" if g.any() else "false structure"}
    return {"dice": dice(p, g), **surface_metrics(p, g, spacing, tolerance_mm), "outcome": "found"}

"""Split the data set's single sinus label (3) into the sagittal and the transverse part."""

from __future__ import annotations

import numpy as np
from brainbarriers.preprocessing import array_axis

SINUS_LABEL = 3
FALX_LABEL = 2


def _physical_axis_coords(shape: tuple[int, ...], axis: int, spacing_mm: float) -> np.ndarray:
    shape1 = [1] * len(shape)
    shape1[axis] = shape[axis]
    return (np.arange(shape[axis], dtype=np.float32) * spacing_mm).reshape(shape1)


def split_sinus(
    label: np.ndarray,
    direction: tuple[float, ...],
    spacing: tuple[float, float, float],
    slab_half_width_mm: float = 10.0,
    margin_mm: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split the sinus label into (sagittal, transverse) boolean masks.

    The superior sagittal sinus runs along the top of the head in the mid-sagittal plane down to
    the confluence at the back; the transverse sinuses leave the confluence sideways along the
    posterior edge of the tentorium. The split therefore is:

    1. Mid-sagittal plane: a least-squares plane ``lr = a + b*ap + c*is`` (mm) fitted to the falx
       voxels (label 2), which follows a tilted or rolled head; without falx voxels, the plane
       ``lr = median(lr of the sinus voxels)``.
    2. Slab: sinus voxels within ``slab_half_width_mm`` of that plane (left-right distance).
    3. Confluence height: the sinus voxels outside the slab are transverse by definition; the
       95th percentile of their height (superior coordinate) plus ``margin_mm`` is the cut.
       Without such voxels the cut is -infinity (the whole slab is sagittal).
    4. Sagittal = sinus voxels in the slab and above the cut; transverse = every other sinus voxel.

    Args:
        label: ABCs task-1 label array in numpy (K, J, I) order.
        direction: SimpleITK direction (row-major 3x3) of the image the array came from.
        spacing: SimpleITK spacing (x, y, z) in mm.
        slab_half_width_mm: half-width of the mid-sagittal slab.
        margin_mm: added to the confluence height, so that the confluence goes to the transverse part.
    Returns:
        (sagittal, transverse): boolean arrays shaped like ``label``; their union is ``label == 3``.
    """
    sinus = label == SINUS_LABEL
    if not sinus.any():
        return np.zeros_like(sinus), np.zeros_like(sinus)
    d = np.array(direction, dtype=float).reshape(3, 3)
    spacing_kji = tuple(float(s) for s in spacing)[::-1]
    lr_ax, ap_ax, is_ax = (array_axis(direction, a) for a in ("LR", "AP", "IS"))
    # Sign of each array axis along L, P, S (LPS world): column (2 - axis) of the direction matrix.
    sign = {ax: float(np.sign(d[row, 2 - ax]) or 1.0) for row, ax in ((0, lr_ax), (1, ap_ax), (2, is_ax))}
    coord = {
        ax: sign[ax] * _physical_axis_coords(label.shape, ax, spacing_kji[ax]) for ax in (lr_ax, ap_ax, is_ax)
    }
    lr = np.broadcast_to(coord[lr_ax], label.shape)
    ap = np.broadcast_to(coord[ap_ax], label.shape)
    height = np.broadcast_to(coord[is_ax], label.shape)

    falx = label == FALX_LABEL
    if falx.sum() >= 10:
        design = np.stack([np.ones(int(falx.sum())), ap[falx], height[falx]], axis=1)
        coef, *_ = np.linalg.lstsq(design, lr[falx], rcond=None)
        plane = coef[0] + coef[1] * ap + coef[2] * height
    else:
        plane = float(np.median(lr[sinus]))
    in_slab = np.abs(lr - plane) <= slab_half_width_mm

    lateral = sinus & ~in_slab
    cut = float(np.percentile(height[lateral], 95)) + margin_mm if lateral.any() else -np.inf
    sagittal = sinus & in_slab & (height > cut)
    transverse = sinus & ~sagittal
    return sagittal, transverse

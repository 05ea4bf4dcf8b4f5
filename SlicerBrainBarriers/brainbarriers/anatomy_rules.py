"""Anatomical rules applied to the fine labels on the model grid, before the clean-up.

The model grid has the identity direction: numpy axes K (inferior -> superior), J (anterior ->
posterior) and I (right -> left). The rules encode relations that hold in every adult head and
that small networks trained on few heads can break on an unfamiliar image.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .geometry import foreground_mask
from .structures import output_label

#: Every structure lies inside the skull, within this distance (mm) of tissue that images bright
#: on some input (brain, scalp): the skull between them is at most about 10 mm thick.
HEAD_MARGIN_MM = 10.0

#: Ventricle voxels within this distance (mm) of the falx's midline: the frontal horns, the bodies
#: and the third ventricle. The atria and occipital horns lie further out; beside them the falx
#: rightly runs down to the straight sinus, below their roof.
NEAR_MIDLINE_MM = 12.0


def falx_above_ventricle_roof(labels: np.ndarray, spacing_xyz: tuple[float, float, float], falx: int,
                              ventricles: int) -> np.ndarray:
    """``labels`` without the falx voxels that lie at or below the ventricles' roof in their coronal slice.

    The falx's free edge runs above the corpus callosum, which roofs the frontal horns and bodies
    of the lateral ventricles. So in a coronal slice holding ventricle voxels near the midline, no
    falx voxel lies at or below the highest of them. A falx predicted there (around the septum and
    the third ventricle, which can look like the interhemispheric fissure) is dropped. Without a
    falx or ventricles the labels are returned unchanged.
    """
    falx_mask = labels == falx
    ventricle_mask = labels == ventricles
    if not falx_mask.any() or not ventricle_mask.any():
        return labels
    midline = float(np.median(np.nonzero(falx_mask)[2]))
    near = np.abs(np.arange(labels.shape[2]) - midline) * spacing_xyz[0] <= NEAR_MIDLINE_MM
    heights = np.arange(labels.shape[0])[:, None, None]
    # per coronal slice J: the highest K of a near-midline ventricle voxel (-1: none)
    roof = np.where(ventricle_mask & near[None, None, :], heights, -1).max(axis=(0, 2))
    below = falx_mask & (heights <= roof[None, :, None])
    out = labels.copy()
    out[below] = 0
    return out


def drop_outside_head(labels: np.ndarray, channels: np.ndarray, spacing_xyz: tuple[float, float, float],
                      margin_mm: float = HEAD_MARGIN_MM) -> np.ndarray:
    """``labels`` without the voxels farther than ``margin_mm`` from the head.

    The head is the union of the inputs' foreground masks (``geometry.foreground_mask``, Otsu on each
    non-empty channel of (C, K, J, I) ``channels``) with its enclosed holes filled, so that dark
    regions inside the brain of any size (large ventricles on MR) count as head; the dark skull
    and CSF at its border are covered by the margin. The fine networks can fire in the air at the
    corners of a crop; no structure lies there. Without any foreground the labels are returned
    unchanged.
    """
    head = np.zeros(labels.shape, bool)
    for channel in channels:
        if channel.any():  # a missing input is an all-zero channel
            head |= foreground_mask(channel)
    if not head.any():
        return labels
    # SimpleITK, not scipy: the core package runs in Slicer and from its wheel without scipy
    image = sitk.GetImageFromArray(head.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    filled = sitk.BinaryFillhole(image, fullyConnected=False, foregroundValue=1)
    # signed distance to the head's surface in mm, positive outside it
    distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        filled, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))
    out = labels.copy()
    out[distance > margin_mm] = 0
    return out


def apply_anatomy_rules(labels: np.ndarray, grid: sitk.Image, values: list[int],
                        channels: np.ndarray | None = None) -> np.ndarray:
    """The rules above on model-grid labels: nothing outside the head (given the normalised
    ``channels``), and the falx above the ventricles when both are among the segmented ``values``."""
    if channels is not None:
        labels = drop_outside_head(labels, channels, grid.GetSpacing())
    falx, ventricles = output_label("falx").value, output_label("ventricles").value
    if falx in values and ventricles in values:
        labels = falx_above_ventricle_roof(labels, grid.GetSpacing(), falx, ventricles)
    return labels

"""Origin-keeping resampling of the training data (training only; inference uses the core's model grid)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def resample_to_spacing(
    image: sitk.Image,
    spacing: tuple[float, float, float],
    interpolator: int = sitk.sitkLinear,
    default_value: float = 0.0,
) -> sitk.Image:
    """Resample ``image`` to ``spacing`` (mm) keeping its origin, direction and physical extent."""
    old_size = np.array(image.GetSize())
    old_spacing = np.array(image.GetSpacing())
    new_size = np.maximum(1, np.round(old_size * old_spacing / np.array(spacing))).astype(int)
    return sitk.Resample(
        image,
        [int(s) for s in new_size],
        sitk.Transform(),
        interpolator,
        image.GetOrigin(),
        tuple(float(s) for s in spacing),
        image.GetDirection(),
        default_value,
        image.GetPixelID() if interpolator == sitk.sitkNearestNeighbor else sitk.sitkFloat32,
    )

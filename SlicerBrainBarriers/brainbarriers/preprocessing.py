"""Intensity normalisation, channel stacking and patient-to-array axis mapping (shared by inference and training)."""

from __future__ import annotations

import numpy as np

from .structures import PatientAxis

_PATIENT_AXIS_ROW = {"LR": 0, "AP": 1, "IS": 2}


def array_axis(direction: tuple[float, ...], patient_axis: PatientAxis) -> int:
    """Array axis (numpy K,J,I order, as sitk.GetArrayFromImage) closest to a patient direction.

    ``direction`` is SimpleITK's row-major 3x3 direction matrix; its columns are the image axes
    in LPS world coordinates.
    """
    d = np.abs(np.array(direction, dtype=float).reshape(3, 3))
    image_axis = int(np.argmax(d[_PATIENT_AXIS_ROW[patient_axis]]))
    return 2 - image_axis


def zscore(array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Z-score normalisation over ``mask`` (default: the whole array)."""
    values = array[mask] if mask is not None else array
    mean, std = float(values.mean()), float(values.std())
    return ((array - mean) / max(std, 1e-6)).astype(np.float32)


#: Fraction of the intensity range above the minimum below which a voxel is background.
HEAD_TOLERANCE = 1e-4


def normalise(array: np.ndarray, modality: str, scheme: dict | None = None) -> np.ndarray:
    """Normalise one modality as a model declares.

    ``scheme`` keys: ``clip`` = [low, high] intensity clip applied first (CT in HU, e.g.
    [-100, 200]); ``percentiles`` = [low, high] percentile clip; then z-score over the head
    (voxels above the minimum). Default: z-score over the head.
    """
    scheme = scheme or {}
    a = array.astype(np.float32)
    # "Above the minimum" with a tolerance: resampling leaves background at the minimum plus rounding
    # noise (1e-13), which a strict comparison would count as head, flipping the statistics with the
    # last bits of floating point (different CPUs, grids or thread counts).
    lo, hi = float(a.min()), float(a.max())
    head = a > lo + HEAD_TOLERANCE * (hi - lo)
    if not head.any():
        head = np.ones_like(a, dtype=bool)
    if "clip" in scheme:
        lo, hi = scheme["clip"]
        a = np.clip(a, lo, hi)
    if "percentiles" in scheme:
        lo, hi = np.percentile(a[head], scheme["percentiles"])
        a = np.clip(a, lo, hi)
    return zscore(a, head)


def stack_channels(
    arrays: dict[str, np.ndarray],
    modalities: list[str] | tuple[str, ...],
    schemes: dict[str, dict] | None = None,
) -> np.ndarray:
    """Normalise each available modality and stack them in ``modalities`` order: (C, K, J, I) float32.

    A modality missing from ``arrays`` becomes an all-zero channel (the mean after z-scoring; the
    same convention as training's modality dropout).
    """
    schemes = schemes or {}
    shape = next(iter(arrays.values())).shape
    out = np.zeros((len(modalities), *shape), dtype=np.float32)
    for c, m in enumerate(modalities):
        if m in arrays:
            out[c] = normalise(arrays[m], m, schemes.get(m))
    return out

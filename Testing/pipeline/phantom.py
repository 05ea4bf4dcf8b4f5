"""A synthetic head defined in world coordinates, sampled onto any grid (tests of the pipeline)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

#: Head centre and radii in world (LPS) mm.
CENTRE = np.array([0.0, 10.0, 20.0])
RADII = np.array([60.0, 72.0, 62.0])
#: A known inner object ("ventricle") centre and radii in world mm.
OBJECT_CENTRE = np.array([12.0, 0.0, 30.0])
OBJECT_RADII = np.array([14.0, 20.0, 12.0])

_VALUES = {  # background, skull, brain, object
    "ct": (-1000.0, 900.0, 40.0, 8.0),
    "t1": (0.0, 60.0, 420.0, 120.0),
    "t2": (0.0, 40.0, 300.0, 900.0),
}


def world_points(size, spacing, origin, direction) -> np.ndarray:
    """World coordinates (K, J, I, 3) of every voxel centre."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    ijk = np.stack([i, j, k], -1).astype(np.float64) * np.array(spacing)
    d = np.array(direction, dtype=float).reshape(3, 3)
    return ijk @ d.T + np.array(origin)


def rotation(axis: int, degrees: float) -> tuple[float, ...]:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    r = np.eye(3)
    p, q = [x for x in range(3) if x != axis]
    r[p, p], r[p, q], r[q, p], r[q, q] = c, -s, s, c
    return tuple(r.ravel())


def inside(points: np.ndarray, centre, radii) -> np.ndarray:
    return (((points - centre) / radii) ** 2).sum(-1) <= 1.0


def make_image(modality: str, size=(64, 72, 60), spacing=(2.0, 2.0, 2.0), origin=None,
               direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), shift=(0.0, 0.0, 0.0), seed: int = 0) -> sitk.Image:
    """The phantom as ``modality`` on the given grid (origin default: grid centred on the head).

    ``shift`` moves the anatomy in world mm (to make misaligned inputs).
    """
    d = np.array(direction, dtype=float).reshape(3, 3)
    if origin is None:
        half = (np.array(size) - 1) * np.array(spacing) / 2
        origin = CENTRE - d @ half
    pts = world_points(size, spacing, origin, direction) - np.array(shift)
    bg, skull, brain, obj = _VALUES[modality]
    a = np.full(pts.shape[:3], bg, dtype=np.float32)
    a[inside(pts, CENTRE, RADII)] = skull
    a[inside(pts, CENTRE, RADII * 0.9)] = brain
    a[inside(pts, OBJECT_CENTRE, OBJECT_RADII)] = obj
    rng = np.random.default_rng(seed)
    a += rng.normal(0, 5, a.shape).astype(np.float32)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection([float(x) for x in direction])
    return img


def object_mask_like(image: sitk.Image) -> np.ndarray:
    """Ground-truth mask of the known object on ``image``'s grid."""
    pts = world_points(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return inside(pts, OBJECT_CENTRE, OBJECT_RADII)


def write_case(folder, name="case", modalities=("ct", "t1", "t2"), ext=".nrrd", **grid) -> dict:
    """Write the phantom's modalities to ``folder``; returns {modality: path}."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for m in modalities:
        p = folder / f"{name}_{m}{ext}"
        sitk.WriteImage(make_image(m, **grid), str(p))
        paths[m] = p
    return paths

"""The localisation atlas: where each structure lies in a known head, for heads the coarse network
cannot place on its own.

The demo's coarse network learnt from heads whose images end a little below the cerebellum. With
the neck in view it can take neck muscle for the posterior fossa (docs/demo.md). The atlas is the
bundled sample head at 3.6 mm with the box of each structure's label on it
(``scripts/build_atlas.py``). The pipeline registers it affinely to the case, using only as much of
the case below the top of the head as the training heads showed, and keeps each target's coarse
region inside its atlas box mapped onto the case and widened by ``ZONE_MARGIN_MM``
(``Segmenter.localise``).
"""

from __future__ import annotations

import itertools
import json
from functools import cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .geometry import Box, register_affine

ATLAS_DIR = Path(__file__).with_name("atlas")
ATLAS_SPACING_MM = 3.6
BOXES_FILE = "boxes.json"
#: Linear size of an adult head against the atlas head that an affine map may claim (the cube
#: root of its determinant); outside it the registration has failed, not found a giant.
PLAUSIBLE_SCALE = (0.7, 1.4)
#: How far (mm) a structure may lie outside its mapped atlas box: heads differ in shape beyond what
#: an affine map follows, and the sample's constructed labels are not expert contours.
ZONE_MARGIN_MM = 15.0
#: ... except below the cerebellum and the ventricles: their atlas boxes end at the tonsils and the
#: obex, just above the foramen magnum, and below lie only the medulla and the neck, where networks
#: that never saw a neck take muscle for cerebellum and dark tissue for ventricles. Chosen on
#: generated neck heads (docs/demo.md, 0.4.1).
ZONE_MARGIN_BELOW_MM = {"cerebellum": 0.0, "ventricles": 0.0}


@cache
def atlas_image(modality: str) -> sitk.Image:
    """The atlas head's ``modality`` image ("ct", "t1" or "t2"), shifted to a minimum of 0 (air)
    so that its centre of mass is the head's."""
    image = sitk.ReadImage(str(ATLAS_DIR / f"{modality}.nii.gz"), sitk.sitkFloat32)
    return image - float(sitk.GetArrayViewFromImage(image).min())


@cache
def atlas_boxes() -> dict[str, tuple[tuple[float, ...], tuple[float, ...]]]:
    """Per fine target: its LPS box (mm) on the atlas head, (min corner, max corner)."""
    raw = json.loads((ATLAS_DIR / BOXES_FILE).read_text(encoding="utf-8"))
    return {key: (tuple(lo), tuple(hi)) for key, (lo, hi) in raw.items()}


def register_atlas(case: sitk.Image, modality: str) -> sitk.Transform:
    """Affine transform mapping atlas points into ``case`` (one input, at least 0, and 0 where it
    should not count): Mattes mutual information, rigid -> similarity -> affine
    (``geometry.register_affine``)."""
    return register_affine(atlas_image(modality), case)


def plausible(transform: sitk.Transform) -> bool:
    """Whether an atlas -> case affine keeps the head's size within ``PLAUSIBLE_SCALE`` and its handedness."""
    determinant = float(np.linalg.det(np.array(transform.GetMatrix()).reshape(3, 3)))
    return determinant > 0 and PLAUSIBLE_SCALE[0] <= determinant ** (1 / 3) <= PLAUSIBLE_SCALE[1]


def mapped_box(box: tuple[tuple[float, ...], tuple[float, ...]], transform: sitk.Transform, grid: sitk.Image,
               margin_mm: float = 0.0, margin_below_mm: float | None = None) -> Box | None:
    """The ``grid`` array box (K, J, I) covering an atlas LPS box mapped through ``transform`` and
    widened by ``margin_mm`` (on the inferior side by ``margin_below_mm`` when given: the side of the
    grid axis that runs closest to the head-foot direction); None when it falls outside the grid."""
    corners = [transform.TransformPoint(c) for c in itertools.product(*zip(*box))]
    index = np.array([grid.TransformPhysicalPointToContinuousIndex(c) for c in corners])  # (8, 3) i, j, k
    spacing = np.array(grid.GetSpacing())
    pad_lo = pad_hi = margin_mm / spacing
    if margin_below_mm is not None:
        z_of_axis = np.array(grid.GetDirection()).reshape(3, 3)[2]  # LPS z (superior) along each index axis
        axis = int(np.argmax(np.abs(z_of_axis)))
        pad_lo, pad_hi = pad_lo.copy(), pad_hi.copy()
        (pad_lo if z_of_axis[axis] > 0 else pad_hi)[axis] = margin_below_mm / spacing[axis]
    size = np.array(grid.GetSize())
    lo = np.clip(np.floor(index.min(0) - pad_lo + 0.5).astype(int), 0, size)
    hi = np.clip(np.ceil(index.max(0) + pad_hi - 0.5).astype(int) + 1, 0, size)
    if np.any(hi <= lo):
        return None
    return (int(lo[2]), int(lo[1]), int(lo[0])), (int(hi[2]), int(hi[1]), int(hi[0]))


def zone_box(key: str, transform: sitk.Transform, grid: sitk.Image) -> Box | None:
    """Where fine target ``key`` may lie on ``grid``: its atlas box mapped through ``transform``,
    widened by ``ZONE_MARGIN_MM`` (below it by ``ZONE_MARGIN_BELOW_MM`` where that names it)."""
    return mapped_box(atlas_boxes()[key], transform, grid, ZONE_MARGIN_MM, ZONE_MARGIN_BELOW_MM.get(key))

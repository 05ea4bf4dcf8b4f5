"""Anatomical rules applied to the fine labels on the model grid, before the clean-up.

The model grid has the identity direction: numpy axes K (inferior -> superior), J (anterior ->
posterior) and I (right -> left). The rules encode relations that hold in every adult head and
that small networks trained on few heads can break on an unfamiliar image.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .geometry import Box, box_slices, head_mask, keep_large_components, label_components
from .structures import output_label

#: Every structure lies inside the skull, within this distance (mm) of tissue that images bright
#: on some input (brain, scalp): the skull between them is at most about 10 mm thick.
HEAD_MARGIN_MM = 10.0

#: Ventricle voxels within this distance (mm) of the falx's midline: the frontal horns, the bodies
#: and the third ventricle. The atria and occipital horns lie further out; beside them the falx
#: rightly runs down to the straight sinus, below their roof.
NEAR_MIDLINE_MM = 12.0

#: The superior sagittal sinus runs in the falx's attached margin: voxels up to this far beyond the
#: falx's upper, anterior and posterior edges guide a bridge where the sinus network lost the vessel.
FALX_MARGIN_BAND_MM = 7.5
#: A bridge between two pieces of the sagittal sinus may run at most this far (mm) through voxels
#: supported neither by the network (probability > 0.5) nor by the falx margin; farther pieces are
#: left apart rather than joined by a guess.
MAX_UNSUPPORTED_BRIDGE_MM = 15.0
#: Fast-marching speeds: the network's probability, at least this inside the falx margin band and
#: this floor elsewhere (low speeds make a path avoid unsupported voxels).
_BAND_SPEED, _FLOOR_SPEED = 0.3, 0.01
#: The cerebellum is one mass under the tentorium whose axial cross-section shrinks to the tonsils
#: at its lower end; below it only the medulla passes through the foramen magnum. A cross-section
#: below this fraction of the largest one both above and below it is a waist between the cerebellum
#: and a second mass further down (with the neck in view: neck muscles or the spine taken for it).
CEREBELLUM_WAIST_FRACTION = 0.35
#: ... counted only when the mass below the waist holds at least this share of the label's voxels.
CEREBELLUM_LOWER_MASS_FRACTION = 0.1
_NEIGHBOURS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)])


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

    The head is the union of the inputs' foreground masks (``geometry.head_mask``, Otsu on each
    non-empty channel of (C, K, J, I) ``channels``) with its enclosed holes filled, so that dark
    regions inside the brain of any size (large ventricles on MR) count as head; the dark skull
    and CSF at its border are covered by the margin. The fine networks can fire in the air at the
    corners of a crop; no structure lies there. Without any foreground the labels are returned
    unchanged.
    """
    head = head_mask(channels)
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


def cerebellum_above_waist(labels: np.ndarray, cerebellum: int) -> np.ndarray:
    """``labels`` with the cerebellum cut at a waist in its axial cross-sections, the part below removed.

    The cross-section areas are taken per axial slice (3-slice running mean). A waist is a slice
    whose area is below CEREBELLUM_WAIST_FRACTION of the largest area both above and below it, with
    at least CEREBELLUM_LOWER_MASS_FRACTION of the voxels below; the lowest-area such slice is the
    cut, and the upper part (the one under the tentorium) is kept. A label without a waist is
    returned unchanged.
    """
    mask = labels == cerebellum
    area = mask.sum(axis=(1, 2)).astype(np.float64)
    if not area.any():
        return labels
    smooth = np.convolve(area, np.ones(3) / 3.0, mode="same")
    below_max = np.maximum.accumulate(smooth)
    above_max = np.maximum.accumulate(smooth[::-1])[::-1]
    below_mass = np.cumsum(area) / area.sum()
    waist = ((smooth < CEREBELLUM_WAIST_FRACTION * np.minimum(below_max, above_max))
             & (below_mass >= CEREBELLUM_LOWER_MASS_FRACTION))
    if not waist.any():
        return labels
    cut = int(np.flatnonzero(waist)[np.argmin(smooth[waist])])
    out = labels.copy()
    out[: cut + 1][mask[: cut + 1]] = 0
    return out


def ventricles_above_cerebellum_base(labels: np.ndarray, cerebellum: int, ventricles: int) -> np.ndarray:
    """``labels`` without ventricle voxels in axial slices below the cerebellum's lowest slice.

    The lowest part of the ventricular system, the fourth ventricle, lies in front of the
    cerebellum and ends at the obex, above the cerebellar tonsils; anything called ventricle
    further down (the spinal canal, CSF in the neck) is not. Unchanged without cerebellum voxels.
    """
    slices = np.flatnonzero((labels == cerebellum).any(axis=(1, 2)))
    if not slices.size:
        return labels
    out = labels.copy()
    low = out[: slices[0]]
    low[low == ventricles] = 0
    return out


def _beyond_edge(mask: np.ndarray, axis: int, steps: int, forward: bool) -> np.ndarray:
    """Voxels up to ``steps`` voxels beyond the edge of ``mask`` facing along ``axis`` (towards
    higher indices when ``forward``), the mask's own voxels included where they lie there."""
    flip = (lambda a: a) if forward else (lambda a: np.flip(a, axis))
    m = flip(mask)
    edge = m.copy()
    inner, outer = [slice(None)] * 3, [slice(None)] * 3
    inner[axis], outer[axis] = slice(None, -1), slice(1, None)
    edge[tuple(inner)] &= ~m[tuple(outer)]  # voxels whose next neighbour along the axis is not in the mask
    out = np.zeros_like(m)
    for k in range(1, steps + 1):
        dst, src = [slice(None)] * 3, [slice(None)] * 3
        dst[axis], src[axis] = slice(k, None), slice(None, -k)
        out[tuple(dst)] |= edge[tuple(src)]
    return flip(out)


def falx_margin_band(falx_mask: np.ndarray, spacing_xyz: tuple[float, float, float],
                     height_mm: float = FALX_MARGIN_BAND_MM) -> np.ndarray:
    """The voxels up to ``height_mm`` beyond the falx's attached margin (not falx themselves): where
    the superior sagittal sinus runs. The margin faces up along the vertex, and forwards and backwards
    where the sinus curves down at the frontal pole and to the torcula, so the band lies above the
    falx's upper edge and in front of and behind its anterior and posterior edges. Axis 0 of the
    (K, J, I) mask runs inferior -> superior, axis 1 anterior -> posterior."""
    up = _beyond_edge(falx_mask, 0, max(1, round(height_mm / spacing_xyz[2])), forward=True)
    along = max(1, round(height_mm / spacing_xyz[1]))
    ends = _beyond_edge(falx_mask, 1, along, forward=True) | _beyond_edge(falx_mask, 1, along, forward=False)
    return (up | ends) & ~falx_mask


def _descend(arrival: np.ndarray, start: tuple[int, int, int], inside: np.ndarray) -> np.ndarray:
    """Voxels from ``start`` down the arrival-time field to a voxel of ``inside`` (26-neighbour steps)."""
    path, here = [start], np.array(start)
    upper = np.array(arrival.shape) - 1
    while not inside[tuple(here)]:
        steps = np.unique(np.clip(here + _NEIGHBOURS, 0, upper), axis=0)
        nxt = steps[np.argmin(arrival[tuple(steps.T)])]
        if arrival[tuple(nxt)] >= arrival[tuple(here)]:  # a flat or rising field: no way down
            break
        here = nxt
        path.append(tuple(nxt))
    return np.array(path)


def join_sagittal_sinus(labels: np.ndarray, probability: np.ndarray, box: Box,
                        spacing_xyz: tuple[float, float, float], sinus: int, falx: int | None = None,
                        max_unsupported_mm: float = MAX_UNSUPPORTED_BRIDGE_MM) -> np.ndarray:
    """``labels`` with the pieces of the superior sagittal sinus joined into one vessel.

    The superior sagittal sinus is one continuous channel from the frontal pole to the torcula, but
    its network can lose it where the image shows it poorly (the vertex of a non-contrast T1) and
    leave pieces. ``probability`` is the sagittal-sinus network's foreground probability over its
    crop ``box`` (model-grid index box). Starting from the largest piece, the nearest other piece is
    reached by fast marching (speed: the probability, raised in the band above the falx's upper
    edge where the sinus runs, ``falx_margin_band``) and the path down the arrival times becomes
    sinus, one voxel thicker on each side where nothing else is labelled. A path that would run
    more than ``max_unsupported_mm`` through voxels supported neither by the network nor by the
    falx margin is not drawn and that piece stays apart. Pieces are the network's own voxels
    (probability > 0.5, labelled ``sinus``), small specks (``keep_large_components``) left out.
    Last, a closing (one voxel) of the sinus in the crop merges tracks one voxel apart.
    """
    region = box_slices(box)
    crop = labels[region]
    components = label_components(keep_large_components((crop == sinus) & (probability > 0.5)))
    if components.max() < 1:
        return labels
    band = (falx_margin_band(crop == falx, spacing_xyz) if falx is not None
            else np.zeros(crop.shape, bool))
    supported = (probability > 0.5) | band
    speed = sitk.GetImageFromArray(np.maximum(probability, np.where(band, _BAND_SPEED, _FLOOR_SPEED)).astype(np.float32))
    speed.SetSpacing(tuple(float(v) for v in spacing_xyz))
    joined = components == 1
    apart = np.zeros(crop.shape, bool)  # pieces too far to join
    bridge = np.zeros(crop.shape, bool)
    step_mm = float(np.mean(spacing_xyz))
    while True:
        waiting = (components > 0) & ~joined & ~apart
        if not waiting.any():
            break
        marching = sitk.FastMarchingImageFilter()
        marching.SetTrialPoints([tuple(int(v) for v in index[::-1]) for index in np.argwhere(joined)])
        arrival = sitk.GetArrayFromImage(marching.Execute(speed))
        nearest = np.unravel_index(np.argmin(np.where(waiting, arrival, np.inf)), arrival.shape)
        piece = components == components[nearest]
        path = _descend(arrival, tuple(int(v) for v in nearest), joined)
        if not joined[tuple(path[-1])] or (~supported[tuple(path.T)]).sum() * step_mm > max_unsupported_mm:
            apart |= piece
            continue
        joined |= piece
        joined[tuple(path.T)] = True
        bridge[tuple(path.T)] = True
    out = labels.copy()
    target = out[region]
    thick = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray(bridge.astype(np.uint8)), (1, 1, 1))) > 0
    target[bridge] = sinus
    target[thick & (target == 0)] = sinus
    # a closing merges tracks one voxel apart (the vessel segmented twice side by side)
    closed = sitk.GetArrayFromImage(sitk.BinaryMorphologicalClosing(
        sitk.GetImageFromArray((target == sinus).astype(np.uint8)), (1, 1, 1))) > 0
    target[closed & (target == 0)] = sinus
    return out


def apply_anatomy_rules(labels: np.ndarray, grid: sitk.Image, values: list[int],
                        channels: np.ndarray | None = None,
                        probabilities: dict[str, tuple[Box, np.ndarray]] | None = None) -> np.ndarray:
    """The rules above on model-grid labels: nothing outside the head (given the normalised
    ``channels``), the falx above the ventricles when both are among the segmented ``values``, and
    the superior sagittal sinus in one piece (given the fine stage's ``probabilities``, fine-target
    key -> (box, foreground probability), holding the sagittal sinus's), no second mass of
    "cerebellum" below a waist, and no ventricles below the cerebellum."""
    cerebellum, falx, ventricles = (output_label(k).value for k in ("cerebellum", "falx", "ventricles"))
    if channels is not None:
        labels = drop_outside_head(labels, channels, grid.GetSpacing())
    if cerebellum in values:
        labels = cerebellum_above_waist(labels, cerebellum)
    if cerebellum in values and ventricles in values:
        labels = ventricles_above_cerebellum_base(labels, cerebellum, ventricles)
    if falx in values and ventricles in values:
        labels = falx_above_ventricle_roof(labels, grid.GetSpacing(), falx, ventricles)
    if "sagittal_sinus" in (probabilities or {}):
        box, probability = probabilities["sagittal_sinus"]
        labels = join_sagittal_sinus(labels, probability, box, grid.GetSpacing(),
                                     output_label("sinuses").value, falx if falx in values else None)
    return labels

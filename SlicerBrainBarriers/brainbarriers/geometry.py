"""Physical-space geometry: grids, resampling by world coordinates, boxes, alignment checks, registration.

Arrays are in SimpleITK's numpy order (K, J, I). World coordinates are LPS (ITK).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import SimpleITK as sitk

from .errors import InputError

Box = tuple[tuple[int, int, int], tuple[int, int, int]]  # (start, stop) per array axis (K, J, I)


def corners_world(image: sitk.Image) -> np.ndarray:
    """World (LPS) coordinates of the 8 outer voxel corners (index -0.5 .. size-0.5), shape (8, 3)."""
    size = image.GetSize()
    pts = []
    for c in itertools.product(*[(-0.5, s - 0.5) for s in size]):
        pts.append(image.TransformContinuousIndexToPhysicalPoint([float(x) for x in c]))
    return np.array(pts)


def world_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world bounding box (min, max) of an image's voxels."""
    c = corners_world(image)
    return c.min(0), c.max(0)


def overlap_fraction(image: sitk.Image, reference: sitk.Image) -> float:
    """Fraction of the reference's world bounding box covered by the image's world bounding box."""
    a0, a1 = world_bounds(image)
    b0, b1 = world_bounds(reference)
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)
    return float(np.prod(inter) / max(np.prod(b1 - b0), 1e-9))


def empty_grid(origin, spacing, size, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), pixel=sitk.sitkUInt8) -> sitk.Image:
    img = sitk.Image([int(s) for s in size], pixel)
    img.SetOrigin([float(o) for o in origin])
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(d) for d in direction])
    return img


def model_grid(reference: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    """An identity-direction (LPS-aligned) grid at ``spacing`` covering the reference's world extent.

    Networks always see the same orientation (as in training, whatever the scanner's direction
    matrix: oblique, flipped or permuted axes), and the grid covers every reference voxel.
    """
    lo, hi = world_bounds(reference)
    spacing_a = np.array(spacing, dtype=float)
    size = np.maximum(1, np.ceil((hi - lo) / spacing_a - 1e-6)).astype(int)
    centre = (lo + hi) / 2
    origin = centre - (size - 1) * spacing_a / 2  # centred on the reference extent
    return empty_grid(origin, spacing_a, size)


def resample_onto(
    image: sitk.Image,
    grid: sitk.Image,
    interpolator: int = sitk.sitkLinear,
    default_value: float = 0.0,
    transform: sitk.Transform | None = None,
    pixel: int | None = None,
) -> sitk.Image:
    """Resample ``image`` onto ``grid`` by world coordinates (``transform`` maps grid points to image points)."""
    if pixel is None:
        pixel = image.GetPixelID() if interpolator == sitk.sitkNearestNeighbor else sitk.sitkFloat32
    return sitk.Resample(image, grid, transform or sitk.Transform(), interpolator, float(default_value), pixel)


def array_to_image(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """Wrap a (K, J, I) array as an image with ``grid``'s geometry."""
    img = sitk.GetImageFromArray(array)
    img.CopyInformation(grid)
    return img


def sub_grid(grid: sitk.Image, box: Box) -> sitk.Image:
    """The part of ``grid`` covered by an array box (same spacing and direction, shifted origin)."""
    (k0, j0, i0), (k1, j1, i1) = box
    origin = grid.TransformIndexToPhysicalPoint((int(i0), int(j0), int(k0)))
    return empty_grid(origin, grid.GetSpacing(), (i1 - i0, j1 - j0, k1 - k0), grid.GetDirection())


def mask_box(mask: np.ndarray) -> Box | None:
    """Tight array box of the non-zero voxels (None when empty)."""
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(i) == 0 for i in idx):
        return None
    return tuple(int(i[0]) for i in idx), tuple(int(i[-1]) + 1 for i in idx)  # type: ignore[return-value]


def map_box(box: Box, source: sitk.Image, target: sitk.Image) -> Box:
    """Smallest ``target`` array box covering ``box`` of ``source`` in world space (clipped to target)."""
    (k0, j0, i0), (k1, j1, i1) = box
    pts = []
    for c in itertools.product((i0 - 0.5, i1 - 0.5), (j0 - 0.5, j1 - 0.5), (k0 - 0.5, k1 - 0.5)):
        w = source.TransformContinuousIndexToPhysicalPoint([float(x) for x in c])
        pts.append(target.TransformPhysicalPointToContinuousIndex(w))
    p = np.array(pts)  # (8, 3) in target (i, j, k)
    lo = np.floor(p.min(0) + 0.5).astype(int)
    hi = np.ceil(p.max(0) - 0.5).astype(int) + 1
    size = np.array(target.GetSize())
    lo, hi = np.clip(lo, 0, size), np.clip(hi, 0, size)
    return (int(lo[2]), int(lo[1]), int(lo[0])), (int(hi[2]), int(hi[1]), int(hi[0]))


def expand_box(box: Box, margin: int | tuple[int, int, int], shape: tuple[int, ...]) -> Box:
    """Grow a box by ``margin`` voxels on every side, clipped to ``shape``."""
    m = (margin,) * 3 if isinstance(margin, int) else tuple(margin)
    lo = tuple(max(0, b - mm) for b, mm in zip(box[0], m))
    hi = tuple(min(s, b + mm) for b, mm, s in zip(box[1], m, shape))
    return lo, hi  # type: ignore[return-value]


def grow_box(box: Box, size: tuple[int, int, int] | list[int], shape: tuple[int, ...]) -> Box:
    """Grow a box about its centre to at least ``size`` voxels per axis, shifted to stay inside
    ``shape`` (an axis of ``shape`` smaller than ``size`` is taken whole)."""
    lo, hi = [], []
    for a, b, n, s in zip(box[0], box[1], size, shape):
        if b - a >= n or s <= n:
            lo.append(max(0, a) if b - a >= n else 0)
            hi.append(min(s, b) if b - a >= n else s)
            continue
        start = min(max(0, a - (n - (b - a)) // 2), s - n)
        lo.append(start)
        hi.append(start + n)
    return tuple(lo), tuple(hi)  # type: ignore[return-value]


def union_box(a: Box, b: Box) -> Box:
    """The smallest box holding both boxes."""
    return (tuple(min(x, y) for x, y in zip(a[0], b[0])), tuple(max(x, y) for x, y in zip(a[1], b[1])))  # type: ignore[return-value]


def box_slices(box: Box) -> tuple[slice, slice, slice]:
    return tuple(slice(a, b) for a, b in zip(*box))  # type: ignore[return-value]


def box_world(box: Box, grid: sitk.Image) -> dict:
    """World (LPS, mm) corners of an array box: {"min": [x,y,z], "max": [x,y,z]}."""
    sub = sub_grid(grid, box)
    lo, hi = world_bounds(sub)
    return {"min": [round(float(v), 2) for v in lo], "max": [round(float(v), 2) for v in hi]}


# --- alignment -------------------------------------------------------------------------------------


#: Components smaller than this fraction of a structure's largest are dropped (boxes and clean-up).
#: Low on purpose: the 4th ventricle is a few percent of the lateral ventricles' volume.
MIN_COMPONENT_FRACTION = 0.02


def label_components(mask: np.ndarray) -> np.ndarray:
    """The 26-connected components of ``mask`` numbered by size (1 = the largest; 0 = background)."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    return sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(image, True)))


def keep_large_components(mask: np.ndarray, min_fraction: float = MIN_COMPONENT_FRACTION,
                          min_voxels: int = 8) -> np.ndarray:
    """Keep connected components (26-connected) at least ``min_fraction`` of the largest and at least
    ``min_voxels`` (when the largest is itself smaller than ``min_voxels``, only the largest is kept)."""
    if not mask.any():
        return mask
    labels = label_components(mask)
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= max(min_voxels if sizes[0] >= min_voxels else sizes[0], min_fraction * sizes[0])) + 1
    return np.isin(labels, keep)


def head_mask(channels: np.ndarray) -> np.ndarray:
    """The union of the foreground masks (``foreground_mask``) of the non-empty channels of (C, K, J, I)
    ``channels``; a missing input is an all-zero channel and adds nothing."""
    head = np.zeros(channels.shape[1:], bool)
    for channel in channels:
        if channel.any():
            head |= foreground_mask(channel)
    return head


def foreground_mask(array: np.ndarray, modality: str = "") -> np.ndarray:
    """Head/foreground mask: CT above -500 HU (air excluded, tissue and bone kept), else Otsu's threshold."""
    if modality == "ct":
        return array > -500
    img = sitk.GetImageFromArray(array.astype(np.float32))
    mask = sitk.OtsuThreshold(img, 0, 1, 128)
    return sitk.GetArrayFromImage(mask).astype(bool)


def alignment(
    a: np.ndarray,
    b: np.ndarray,
    spacing: tuple[float, float, float],
    modalities: tuple[str, str] = ("", ""),
    valid: np.ndarray | None = None,
) -> tuple[float, float]:
    """(Dice of the foreground masks, centroid distance in mm) of two arrays on one grid.

    ``valid`` restricts both masks to where both images have data (different fields of view).
    """
    ma, mb = foreground_mask(a, modalities[0]), foreground_mask(b, modalities[1])
    if valid is not None:
        ma, mb = ma & valid, mb & valid
    total = ma.sum() + mb.sum()
    dice = float(2 * np.logical_and(ma, mb).sum() / total) if total else 0.0
    if not ma.any() or not mb.any():
        return dice, float("inf")
    ca = np.array(np.nonzero(ma)).mean(1)[::-1] * np.array(spacing)
    cb = np.array(np.nonzero(mb)).mean(1)[::-1] * np.array(spacing)
    return dice, float(np.linalg.norm(ca - cb))


def coverage(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform | None = None) -> np.ndarray:
    """Boolean (K, J, I) array of the ``grid`` voxels that ``image`` covers."""
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    return sitk.GetArrayFromImage(resample_onto(ones, grid, sitk.sitkNearestNeighbor, 0, transform)).astype(bool)


def check_overlap(image: sitk.Image, reference: sitk.Image, label: str, minimum: float = 0.2) -> None:
    """Refuse grids whose world extents do not (sufficiently) overlap the reference's."""
    frac = overlap_fraction(image, reference)
    if frac < minimum:
        raise InputError(
            f"{label} covers only {frac:.0%} of the reference image in world space; the grids do not overlap "
            "(wrong file or a broken origin/direction)"
        )


#: ITK's threads sum the metric's partial results in an order that varies from run to run, so a
#: registration on several threads can return a different transform for the same images (up to
#: 2 mm apart on generated neck heads, enough to move a box edge). One thread gives one answer.
#: The metric takes ITK's global default, not the registration method's own thread count.
REGISTRATION_THREADS = 1


@contextmanager
def _itk_threads(count: int) -> Iterator[None]:
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def register_rigid(fixed: sitk.Image, moving: sitk.Image, iterations: int = 100) -> sitk.Transform:
    """Rigid (Euler 3D) registration by Mattes mutual information; maps fixed points to moving points.
    Repeatable: the same images give the same transform on every run (``REGISTRATION_THREADS``)."""
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed=7)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=iterations, gradientMagnitudeTolerance=1e-6
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=False)
    with _itk_threads(REGISTRATION_THREADS):
        return reg.Execute(fixed, moving)


def register_affine(
    fixed: sitk.Image,
    moving: sitk.Image,
    *,
    mean_squares: bool = False,
    sampling: float = 0.25,
    seed: int = 7,
    iterations: int = 100,
    min_step: float = 1e-3,
    shrink: tuple[int, ...] = (2, 1),
    smoothing: tuple[float, ...] = (1, 0),
    report: Callable[[str, float], None] | None = None,
) -> sitk.Transform:
    """Affine registration mapping fixed points to moving points: rigid, then similarity, then
    affine, each stage starting from the last, from a moments initialisation. Mattes mutual
    information (32 bins) or, with ``mean_squares``, mean squares, on a random ``sampling`` share
    of the fixed voxels; ``report`` receives each stage's name and final metric value. Repeatable:
    the same images give the same transform on every run (``REGISTRATION_THREADS``)."""
    fixed, moving = sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32)
    transform: sitk.Transform = sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS))
    for kind in (sitk.Euler3DTransform, sitk.Similarity3DTransform, sitk.AffineTransform):
        if kind is not sitk.Euler3DTransform:
            general = sitk.AffineTransform(3) if kind is sitk.AffineTransform else kind()
            general.SetCenter(transform.GetCenter())
            general.SetMatrix(transform.GetMatrix())
            general.SetTranslation(transform.GetTranslation())
            transform = general
        reg = sitk.ImageRegistrationMethod()
        if mean_squares:
            reg.SetMetricAsMeanSquares()
        else:
            reg.SetMetricAsMattesMutualInformation(32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(sampling, seed=seed)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=min_step, numberOfIterations=iterations,
                                                     relaxationFactor=0.6)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel(list(shrink))
        reg.SetSmoothingSigmasPerLevel(list(smoothing))
        reg.SetInitialTransform(transform, inPlace=True)
        with _itk_threads(REGISTRATION_THREADS):
            reg.Execute(fixed, moving)
        if report is not None:
            report(kind.__name__, reg.GetMetricValue())
    return transform

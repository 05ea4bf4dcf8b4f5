"""Domain-randomised synthetic heads from a tissue label map (SynthSeg-style).

A *tissue map* labels every voxel of a head with one of the classes in :data:`TISSUES` (air,
scalp, skull, CSF, brain tissues and the five targets). :func:`synthesize` deforms the map with a
random affine pose and a smooth elastic warp, then draws each channel from it: every class gets
a random mean and spread (CT in Hounsfield units within the class's physical range; T1- and
T2-like channels either within a plausible contrast range or, with ``random_contrast``
probability, anywhere in [0, 1]), followed by partial-volume blur, a random acquisition
resolution (sometimes thick slices), a multiplicative bias field (MR), noise and gamma (MR).

The thin targets (falx, tentorium, sinus) are often invisible in real images: dura is thinner than
a voxel, and a sinus without contrast looks like its surroundings. A generator that always gives
them a contrast of their own teaches a network to look for that contrast, and on a real T1 it then
marks whatever lies at the midline. So with ``conceal_thin`` probability per channel a thin class
takes the drawn intensity of one of its ``stand_ins`` (the CSF of the fissure, cortex, skull), and
the network has to find the structure from the anatomy around it.

Real scans often reach far below the skull base, into the neck, while a tissue map built from a
brain template stops just under the cerebellum. A network that never saw anything below the
cerebellum takes the lowest tissue in view for it. So with ``neck_probability`` the map is first
extended downwards by :func:`add_neck`: a tapering soft-tissue column with the spinal cord in its
canal, the vertebrae and the airway, none of them a target.

Because the label is deformed first and the image is drawn from the deformed label, image and
label stay aligned by construction. The output is the ABCs task-1 label map of the same grid.
Everything is drawn from one ``numpy`` generator: the same seed gives the same case.

Modality dropout is not done here: the training augmentation already drops channels
(``train.augmentation.modality_dropout_probability``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Tissue:
    """One class of the tissue map: its value, the task-1 label it belongs to, and intensity ranges.

    ``ct`` is a range of class means in HU; ``t1`` and ``t2`` ranges of class means on [0, 1].
    ``stand_ins``: classes whose intensity a thin class takes when it is concealed (empty: never).
    """

    value: int
    key: str
    label: int
    ct: tuple[float, float]
    t1: tuple[float, float]
    t2: tuple[float, float]
    stand_ins: tuple[str, ...] = ()


#: The classes a tissue map may hold (value = index). Ranges follow typical non-contrast CT values
#: and the usual T1/T2 contrast order; the sinus T1 range spans flow voids to contrast enhancement.
TISSUES: tuple[Tissue, ...] = (
    Tissue(0, "air", 0, (-1000, -950), (0.0, 0.05), (0.0, 0.05)),
    Tissue(1, "scalp", 0, (-90, 70), (0.3, 1.0), (0.2, 0.9)),
    Tissue(2, "skull", 0, (500, 1500), (0.0, 0.5), (0.0, 0.35)),
    Tissue(3, "csf", 0, (0, 15), (0.0, 0.25), (0.7, 1.0)),
    Tissue(4, "cortex", 0, (32, 45), (0.35, 0.6), (0.45, 0.7)),
    Tissue(5, "white_matter", 0, (20, 32), (0.6, 0.95), (0.25, 0.5)),
    Tissue(6, "deep_grey", 0, (30, 45), (0.4, 0.7), (0.35, 0.65)),
    Tissue(7, "brainstem", 0, (25, 40), (0.5, 0.85), (0.3, 0.6)),
    Tissue(8, "cerebellar_cortex", 1, (30, 45), (0.35, 0.6), (0.45, 0.7)),
    Tissue(9, "cerebellar_white_matter", 1, (20, 35), (0.55, 0.9), (0.25, 0.5)),
    Tissue(10, "ventricles", 5, (0, 15), (0.0, 0.25), (0.7, 1.0)),
    Tissue(11, "falx", 2, (40, 150), (0.0, 0.45), (0.0, 0.35), ("csf", "cortex")),
    Tissue(12, "sinus", 3, (35, 80), (0.0, 1.0), (0.0, 0.7), ("csf", "skull", "cortex")),
    Tissue(13, "tentorium", 4, (40, 150), (0.0, 0.45), (0.0, 0.35), ("csf", "cortex", "cerebellar_cortex")),
    # the neck's own classes (add_neck); drawn after the head's so that heads without a neck keep
    # the random streams, and so the images, of data sets drawn before these classes existed
    Tissue(14, "muscle", 0, (35, 65), (0.2, 0.55), (0.15, 0.45)),
    Tissue(15, "fat", 0, (-120, -70), (0.7, 1.0), (0.5, 0.9)),
)
#: The classes before the neck's (see above).
HEAD_CLASSES = 14
TISSUE_VALUE = {t.key: t.value for t in TISSUES}
#: tissue value -> ABCs task-1 label
TASK1_LUT = np.array([t.label for t in TISSUES], np.uint8)


@dataclass(frozen=True)
class SynthParams:
    """Ranges of the random draws (one place; ``synthesize`` reads nothing else)."""

    rotation_degrees: float = 15.0
    scales: tuple[float, float] = (0.88, 1.12)
    shear: float = 0.05
    translation_mm: float = 10.0
    elastic_control_points: int = 6
    elastic_max_mm: float = 5.0
    random_contrast: float = 0.3  # probability that an MR channel ignores the contrast ranges
    mr_spread: tuple[float, float] = (0.0, 0.05)  # within-class standard deviation, [0, 1] scale
    ct_spread_hu: tuple[float, float] = (2.0, 10.0)
    partial_volume_sigma_mm: tuple[float, float] = (0.3, 0.8)
    resolution_mm: tuple[float, float] = (1.0, 2.0)  # acquisition spacing per axis
    thick_slice_probability: float = 0.35
    thick_slice_mm: tuple[float, float] = (3.0, 6.0)
    bias_std: float = 0.3  # of the log field
    bias_control_points: int = 4
    mr_noise: tuple[float, float] = (0.0, 0.04)
    ct_noise_hu: tuple[float, float] = (0.0, 12.0)
    log_gamma_std: float = 0.25
    conceal_thin: float = 0.5  # probability, per channel and thin class, of taking a stand-in's intensity
    neck_probability: float = 0.0  # probability of a neck below the map (see add_neck); 0 keeps older data sets
    neck_mm: tuple[float, float] = (20.0, 110.0)  # its length
    neck_taper: tuple[float, float] = (0.55, 0.8)  # its cross-section against the map's lowest slice
    neck_mimic: float = 0.5  # probability, per channel, that neck muscle takes the cerebellar cortex's intensity


#: In-plane anatomy of the neck, mm: (cord radius, canal radius, arch thickness, vertebral body
#: radius, body centre in front of the cord, airway radius, airway centre in front of the cord).
#: Each is scaled by a random factor per neck.
NECK_ANATOMY_MM = (4.5, 8.0, 4.0, 10.0, 20.0, 6.0, 42.0)
#: Skin (scalp class) and the range of the subcutaneous fat's thickness under it, mm.
NECK_SKIN_MM = 2.0
NECK_FAT_MM = (3.0, 10.0)
#: Over this length the neck's cross-section narrows from the map's lowest slice to its taper.
NECK_TAPER_MM = 30.0


def _superior_axis(image: sitk.Image) -> tuple[int, int]:
    """(numpy axis nearest to head-foot, +1 if the index grows towards the head (LPS +z) else -1)."""
    from brainbarriers.preprocessing import array_axis

    axis = array_axis(image.GetDirection(), "IS")
    return axis, int(np.sign(np.array(image.GetDirection()).reshape(3, 3)[2, 2 - axis]))


def _in_plane_anterior(image: sitk.Image, axis: int) -> np.ndarray:
    """Unit vector, in the index units of the two numpy axes other than ``axis``, pointing anterior (LPS -y)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    others = [a for a in range(3) if a != axis]
    vector = np.array([-direction[1, 2 - a] / spacing[2 - a] for a in others])
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


def _depth_mm(mask: np.ndarray, spacing_mm: np.ndarray) -> np.ndarray:
    """Per pixel of a 2D mask, its distance (mm) inside from the mask's edge (<= 0 outside)."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing([float(v) for v in spacing_mm[::-1]])
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=True, squaredDistance=False, useImageSpacing=True)
    return sitk.GetArrayFromImage(distance)


def add_neck(tissue_map: sitk.Image, length_mm: float, rng: np.random.Generator,
             taper: tuple[float, float] = SynthParams.neck_taper) -> sitk.Image:
    """The tissue map extended ``length_mm`` downwards with a neck; the head itself is unchanged.

    The neck's cross-section is the map's lowest head slice narrowed about the spinal cord (below the
    brainstem's lowest slice) to a random fraction in ``taper`` over NECK_TAPER_MM. Inside it is
    muscle with, from the cord forwards: the cord (brainstem class) in a CSF canal, a bony arch
    around the canal and a vertebral body in front of it (skull class), and the airway; under the
    skin (scalp class, NECK_SKIN_MM) a layer of fat of random thickness (NECK_FAT_MM).
    """
    axis, up = _superior_axis(tissue_map)
    spacing_xyz = np.array(tissue_map.GetSpacing())
    step = float(spacing_xyz[2 - axis])
    n = int(round(length_mm / step))
    if n < 1:
        return tissue_map
    array = np.moveaxis(sitk.GetArrayFromImage(tissue_map), axis, 0)
    if up < 0:
        array = array[::-1]  # index 0 is now the lowest slice
    head = array[0] != TISSUE_VALUE["air"]
    if not head.any():
        raise ValueError("the tissue map's lowest slice holds no head: add_neck needs a head that reaches it")
    stem = np.flatnonzero((array == TISSUE_VALUE["brainstem"]).any(axis=(1, 2)))
    cord = (np.argwhere(array[stem[0]] == TISSUE_VALUE["brainstem"]) if stem.size else np.argwhere(head)).mean(0)
    forward = _in_plane_anterior(tissue_map, axis)
    plane_mm = np.array([spacing_xyz[2 - a] for a in range(3) if a != axis])
    sizes = np.array(NECK_ANATOMY_MM) * rng.uniform(0.8, 1.2, len(NECK_ANATOMY_MM))
    r_cord, r_canal, arch, r_body, body_at, r_air, air_at = sizes
    narrowest = rng.uniform(*taper)
    fat_mm = rng.uniform(*NECK_FAT_MM)

    grid = np.indices(head.shape).astype(float)
    offset = grid - cord[:, None, None]

    def within(centre_mm: float, radius_mm: float) -> np.ndarray:
        centre = forward * centre_mm / float(np.mean(plane_mm))
        return np.sqrt((((offset - centre[:, None, None]) * plane_mm[:, None, None]) ** 2).sum(0)) <= radius_mm

    columns = np.full(head.shape, TISSUE_VALUE["muscle"], np.uint8)
    columns[within(body_at, r_body) | within(0.0, r_canal + arch)] = TISSUE_VALUE["skull"]
    columns[within(0.0, r_canal)] = TISSUE_VALUE["csf"]
    columns[within(0.0, r_cord)] = TISSUE_VALUE["brainstem"]
    columns[within(air_at, r_air)] = TISSUE_VALUE["air"]

    def cross_section(scale: float) -> np.ndarray:
        """One slice of the neck: the lowest head slice narrowed by ``scale``, layered."""
        source = np.round(cord[:, None, None] + offset / scale).astype(int)
        ok = np.all((source >= 0) & (source < np.array(head.shape)[:, None, None]), axis=0)
        section = np.zeros(head.shape, bool)
        section[ok] = head[source[0][ok], source[1][ok]]
        layers = columns.copy()  # under the skin a layer of fat, then muscle around the spine
        depth = _depth_mm(section, plane_mm)
        layers[(depth <= NECK_SKIN_MM + fat_mm) & (layers == TISSUE_VALUE["muscle"])] = TISSUE_VALUE["fat"]
        layers[depth <= NECK_SKIN_MM] = TISSUE_VALUE["scalp"]
        return np.where(section, layers, TISSUE_VALUE["air"]).astype(np.uint8)

    neck = np.zeros((n, *head.shape), np.uint8)
    scales = [1.0 - (1.0 - narrowest) * min(1.0, (d + 1) * step / NECK_TAPER_MM) for d in range(n)]
    for scale in set(scales):  # below the taper every slice is the same
        neck[[n - 1 - d for d, s in enumerate(scales) if s == scale]] = cross_section(scale)
    extended = np.concatenate([neck, array])
    if up < 0:
        extended = extended[::-1]
    out = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(extended, 0, axis)))
    out.SetSpacing(tissue_map.GetSpacing())
    out.SetDirection(tissue_map.GetDirection())
    index = [0, 0, 0]
    if up > 0:  # the new slices come before the old first one
        index[2 - axis] = -n
    out.SetOrigin(tissue_map.TransformIndexToPhysicalPoint(index))
    return out


def random_pose(reference: sitk.Image, rng: np.random.Generator, p: SynthParams) -> sitk.Transform:
    """A random affine about the image centre composed with a smooth B-spline warp."""
    size = np.array(reference.GetSize())
    centre = reference.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2.0).tolist())
    affine = sitk.AffineTransform(3)
    affine.SetCenter(centre)
    angles = np.deg2rad(rng.uniform(-p.rotation_degrees, p.rotation_degrees, 3))
    rotation = sitk.Euler3DTransform((0, 0, 0), *angles.tolist())
    matrix = np.array(rotation.GetMatrix()).reshape(3, 3)
    matrix = matrix @ np.diag(rng.uniform(*p.scales, 3))
    matrix = matrix @ (np.eye(3) + rng.uniform(-p.shear, p.shear, (3, 3)) * (1 - np.eye(3)))
    affine.SetMatrix(matrix.ravel().tolist())
    affine.SetTranslation(rng.uniform(-p.translation_mm, p.translation_mm, 3).tolist())

    mesh = [p.elastic_control_points] * 3
    bspline = sitk.BSplineTransformInitializer(reference, mesh, 3)
    n = len(bspline.GetParameters())
    # control-point displacements; the cubic spline smooths them to about half their peak
    bspline.SetParameters(rng.uniform(-p.elastic_max_mm, p.elastic_max_mm, n).tolist())
    return sitk.CompositeTransform([affine, bspline])


def _draw_means(rng: np.random.Generator, channel: str, p: SynthParams, tissues: tuple[Tissue, ...]) -> np.ndarray:
    if channel != "ct" and rng.random() < p.random_contrast:
        return rng.uniform(0.0, 1.0, len(tissues))
    return np.array([rng.uniform(*getattr(t, channel)) for t in tissues])


def _smooth(image: sitk.Image, sigma_mm: np.ndarray) -> sitk.Image:
    if max(sigma_mm) <= 0:
        return image
    # an axis without blur gets a negligible sigma: the recursive filter refuses zero
    return sitk.SmoothingRecursiveGaussian(image, [max(float(s), 1e-2) for s in sigma_mm])


def _resolution(image: sitk.Image, rng: np.random.Generator, p: SynthParams) -> sitk.Image:
    """Blur and resample through a random acquisition grid (thick slices on one axis sometimes)."""
    spacing = np.array(image.GetSpacing())
    acquired = rng.uniform(*p.resolution_mm, 3)
    if rng.random() < p.thick_slice_probability:
        acquired[rng.integers(3)] = rng.uniform(*p.thick_slice_mm)
    acquired = np.maximum(acquired, spacing)
    partial = rng.uniform(*p.partial_volume_sigma_mm)
    sigma = np.sqrt(partial**2 + np.maximum(0.0, (acquired**2 - spacing**2)) * (0.4**2))
    blurred = _smooth(image, sigma)
    if np.all(acquired <= spacing * 1.05):
        return blurred
    size = np.maximum(1, np.round(np.array(image.GetSize()) * spacing / acquired)).astype(int)
    low = sitk.Resample(blurred, size.tolist(), sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                        acquired.tolist(), image.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.Resample(low, image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def _bias_field(reference: sitk.Image, rng: np.random.Generator, p: SynthParams) -> np.ndarray:
    n = p.bias_control_points
    coarse = sitk.GetImageFromArray(rng.normal(0.0, rng.uniform(0, p.bias_std), (n, n, n)).astype(np.float32))
    size, spacing = np.array(reference.GetSize()), np.array(reference.GetSpacing())
    coarse.SetSpacing((size * spacing / (n - 1)).tolist())
    coarse.SetOrigin(reference.GetOrigin())
    coarse.SetDirection(reference.GetDirection())
    field = sitk.Resample(coarse, reference, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat32)
    return np.exp(sitk.GetArrayViewFromImage(field))


def draw_stand_ins(rng: np.random.Generator, p: SynthParams = SynthParams()) -> dict[int, int]:
    """Which thin classes are concealed in one channel: {class value: stand-in class value}."""
    chosen = {}
    for t in TISSUES:
        if t.stand_ins and rng.random() < p.conceal_thin:
            chosen[t.value] = TISSUE_VALUE[t.stand_ins[int(rng.integers(len(t.stand_ins)))]]
    return chosen


def draw_channel(tissue: np.ndarray, reference: sitk.Image, channel: str, rng: np.random.Generator,
                 p: SynthParams = SynthParams(), stand_ins: dict[int, int] | None = None,
                 neck_rng: np.random.Generator | None = None) -> np.ndarray:
    """One channel (``ct``, ``t1`` or ``t2``) drawn from a (deformed) tissue array on ``reference``;
    each class in ``stand_ins`` is drawn with its stand-in's mean and spread (see ``draw_stand_ins``).
    The neck classes' means and spreads come from ``neck_rng`` (default: ``rng``, after the head's);
    with ``neck_mimic`` probability neck muscle looks like cerebellar cortex, so that a network
    has to tell them apart by shape and place."""
    spread_range = p.ct_spread_hu if channel == "ct" else p.mr_spread
    means = _draw_means(rng, channel, p, TISSUES[:HEAD_CLASSES])
    spreads = rng.uniform(*spread_range, HEAD_CLASSES)
    neck = rng if neck_rng is None else neck_rng
    means = np.concatenate([means, _draw_means(neck, channel, p, TISSUES[HEAD_CLASSES:])])
    spreads = np.concatenate([spreads, neck.uniform(*spread_range, len(TISSUES) - HEAD_CLASSES)])
    if neck.random() < p.neck_mimic:
        muscle, cerebellum = TISSUE_VALUE["muscle"], TISSUE_VALUE["cerebellar_cortex"]
        means[muscle], spreads[muscle] = means[cerebellum], spreads[cerebellum]
    for value, stand_in in (stand_ins or {}).items():
        means[value], spreads[value] = means[stand_in], spreads[stand_in]
    array = (means[tissue] + spreads[tissue] * rng.standard_normal(tissue.shape)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    array = sitk.GetArrayFromImage(_resolution(image, rng, p))
    if channel == "ct":
        array += rng.uniform(*p.ct_noise_hu) * rng.standard_normal(array.shape).astype(np.float32)
        return np.clip(array, -1024, 3071)
    array *= _bias_field(reference, rng, p)
    array += rng.uniform(*p.mr_noise) * rng.standard_normal(array.shape).astype(np.float32)
    array = np.clip(array, 0, None)
    array /= max(float(array.max()), 1e-6)
    return array ** np.exp(rng.normal(0.0, p.log_gamma_std))


def synthesize(tissue_map: sitk.Image, rng: np.random.Generator, p: SynthParams = SynthParams(),
               channels: tuple[str, ...] = ("ct", "t1", "t2")) -> tuple[dict[str, sitk.Image], sitk.Image]:
    """One random case: ``({channel: image}, task-1 label image)`` on the tissue map's grid (extended
    downwards when a neck is drawn, see ``SynthParams.neck_probability``).

    CT is int16 HU, MR channels uint8 (0-255), the label uint8 (ABCs task-1 values).
    """
    # concealment draws from a child generator: it leaves ``rng``'s own stream (pose, intensities)
    # as it was before concealment existed, so a seed still gives the same head
    hide, neck = rng.spawn(2)  # the first child is the one concealment always used
    if neck.random() < p.neck_probability:
        tissue_map = add_neck(tissue_map, neck.uniform(*p.neck_mm), neck, p.neck_taper)
    pose = random_pose(tissue_map, rng, p)
    moved = sitk.Resample(tissue_map, tissue_map, pose, sitk.sitkNearestNeighbor, TISSUE_VALUE["air"])
    tissue = sitk.GetArrayFromImage(moved).astype(np.intp)
    images = {}
    for channel in channels:
        array = draw_channel(tissue, tissue_map, channel, rng, p, draw_stand_ins(hide, p), neck)
        if channel == "ct":
            out = sitk.GetImageFromArray(np.round(array).astype(np.int16))
        else:
            out = sitk.GetImageFromArray(np.round(array * 255).astype(np.uint8))
        out.CopyInformation(tissue_map)
        images[channel] = out
    label = sitk.GetImageFromArray(TASK1_LUT[tissue])
    label.CopyInformation(tissue_map)
    return images, label


def read_tissue_map(path: Path) -> sitk.Image:
    """Read a tissue map and check that it holds values of :data:`TISSUES` only."""
    from brainbarriers.io import read_image

    image = read_image(Path(path), "label")  # the reader refuses non-integer or negative values
    array = sitk.GetArrayViewFromImage(image)
    if array.max() >= len(TISSUES):
        raise ValueError(f"{path}: tissue values must lie in 0..{len(TISSUES) - 1} (training/synth.py TISSUES), "
                         f"found {array.min()}..{array.max()}")
    return sitk.Cast(image, sitk.sitkUInt8)


def write_cases(tissue_map: Path, out: Path, count: int, seed: int, first_id: int = 2,
                overwrite: bool = False, params: SynthParams = SynthParams()) -> list[str]:
    """Write ``count`` synthetic cases in the ABCs layout (``NNN/NNN_{ct,t1,t2}.mha`` + label).

    Case ``first_id + n`` uses the generator seeded with ``(seed, n)``, so any case can be redrawn
    alone and adding cases never changes the earlier ones. Existing case folders are refused
    unless ``overwrite``.
    """
    source = read_tissue_map(tissue_map)
    cases = [f"{first_id + n:03d}" for n in range(count)]
    taken = [c for c in cases if (out / c).exists()]
    if taken and not overwrite:
        raise ValueError(f"{out / taken[0]} exists: choose another --first-id or output folder")
    written = []
    for n, case in enumerate(cases):
        images, label = synthesize(source, np.random.default_rng([seed, n]), params)
        folder = out / case
        folder.mkdir(parents=True, exist_ok=True)
        for key, image in images.items():
            sitk.WriteImage(image, str(folder / f"{case}_{key}.mha"), useCompression=True)
        sitk.WriteImage(label, str(folder / f"{case}_labelmap_task1.mha"), useCompression=True)
        written.append(case)
    return written

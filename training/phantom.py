"""Synthetic head phantoms in the ABCs 2020 task-1 file layout (for tests and smoke training).

Each case is a head-shaped ellipsoid with scalp, skull, a CSF rim and brain, and the six training
targets in a plausible arrangement, written with the ABCs label values:

* cerebellum (1): a plump, two-lobed body below the tentorium, posterior and inferior;
* falx cerebri (2): a mid-sagittal sheet in the upper brain, its free lower edge above the
  ventricles, meeting the tentorium at the back;
* sinuses (3): a T-shaped tube: the sagittal sinus along the top midline under the skull, and the
  transverse sinuses along the posterior edge of the tentorium where it meets the skull;
* tentorium cerebelli (4): a tent-shaped sheet over the cerebellum, highest at the midline and
  sloping down laterally and posteriorly, with a notch (incisura) at the front;
* ventricles (5): two lateral ventricles either side of the midline in the centre.

Shape, size, pose (rotation, translation) and intensities vary randomly per case. Contrast is
modality-specific: CT has bright bone and slightly hyperdense dura and sinuses; the (contrast) T1
has bright sinuses and enhancing dura; the T2 has bright CSF and ventricles, and dark flow voids in
the sinuses. Smooth bias fields, noise and partial-volume blur make the images less trivial.

The anatomy is defined in millimetres relative to the head centre (x: left, y: posterior,
z: superior, i.e. LPS) and scaled down to fit the field of view when the grid is small, so the same
generator gives 64^3 voxels at 2.4 mm for fast tests and 164 x 194 x 142 at 1.2 mm for realism.
Thin structures are at least ``min_thickness_voxels`` voxels thick so they stay visible at coarse
sampling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

#: Tissue classes used for the intensities (labels 1..5 are the ABCs task-1 labels).
_AIR, _SCALP, _BONE, _CSF, _BRAIN = 10, 11, 12, 13, 14
_CEREBELLUM, _FALX, _SINUS, _TENTORIUM, _VENTRICLES = 1, 2, 3, 4, 5

#: Mean intensity per tissue and modality: CT in HU, MR in arbitrary units.
_INTENSITY = {
    "ct": {_AIR: -1000, _SCALP: 40, _BONE: 1100, _CSF: 5, _BRAIN: 33, _CEREBELLUM: 41,
           _FALX: 70, _SINUS: 65, _TENTORIUM: 70, _VENTRICLES: 5},
    "t1": {_AIR: 0, _SCALP: 300, _BONE: 80, _CSF: 60, _BRAIN: 400, _CEREBELLUM: 480,
           _FALX: 650, _SINUS: 950, _TENTORIUM: 650, _VENTRICLES: 60},
    "t2": {_AIR: 0, _SCALP: 250, _BONE: 60, _CSF: 900, _BRAIN: 350, _CEREBELLUM: 430,
           _FALX: 150, _SINUS: 90, _TENTORIUM: 150, _VENTRICLES: 950},
}
_NOISE = {"ct": 6.0, "t1": 15.0, "t2": 15.0}

FULL_SIZE = (164, 194, 142)  # SimpleITK (x, y, z) order, as the ABCs images
FULL_SPACING = 1.2
SMALL_SIZE = (64, 64, 64)
SMALL_SPACING = 2.4


@dataclass(frozen=True)
class PhantomCase:
    """The images of one generated case (SimpleITK images on one grid)."""

    ct: sitk.Image
    t1: sitk.Image
    t2: sitk.Image
    label: sitk.Image


def _rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-max_degrees, max_degrees, size=3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float) -> np.ndarray:
    """A smooth random field in [-amplitude, amplitude] (bias fields, texture)."""
    coarse = rng.standard_normal((4, 4, 4))
    field = ndimage.zoom(coarse, [s / 4 for s in shape], order=3)[: shape[0], : shape[1], : shape[2]]
    field = np.pad(field, [(0, s - f) for s, f in zip(shape, field.shape)], mode="edge")
    return (amplitude * field / max(np.abs(field).max(), 1e-6)).astype(np.float32)


def _tissue_map(
    shape_kji: tuple[int, int, int],
    spacing: float,
    rng: np.random.Generator,
    min_thickness_voxels: float,
) -> np.ndarray:
    """Tissue class per voxel (numpy K, J, I order)."""
    nk, nj, ni = shape_kji
    fov = np.array([ni, nj, nk], dtype=float) * spacing  # x, y, z extent in mm
    # Head semi-axes (mm) at full size, scaled to fit the field of view.
    head = np.array([74.0, 92.0, 72.0]) * rng.uniform(0.92, 1.06, size=3)
    scale = min(1.0, float(np.min(0.46 * fov / head)))
    head *= scale
    thick = max(3.0 * scale, min_thickness_voxels * spacing)  # dura sheet thickness (mm)
    sinus_r = max(3.5 * scale, 0.75 * min_thickness_voxels * spacing)  # sinus tube radius (mm)

    # World coordinates (mm) of voxel centres relative to the grid centre, then into the head frame.
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape_kji), indexing="ij")
    world = np.stack([(i - (ni - 1) / 2) * spacing, (j - (nj - 1) / 2) * spacing, (k - (nk - 1) / 2) * spacing])
    shift = rng.uniform(-0.04, 0.04, size=3) * fov
    rot = _rotation(rng, 7.0)
    pts = np.einsum("ab,b...->a...", rot.T, world - shift.reshape(3, 1, 1, 1)).astype(np.float32)
    x, y, z = pts  # x: left, y: posterior, z: superior (mm)
    ax, ay, az = head

    r = np.sqrt((x / ax) ** 2 + (y / ay) ** 2 + (z / az) ** 2)
    skull_in, skull_out = 0.90, 0.97
    tissue = np.full(shape_kji, _AIR, dtype=np.uint8)
    tissue[r <= 1.0] = _SCALP
    tissue[r <= skull_out] = _BONE
    tissue[r <= skull_in] = _CSF
    brain = r <= skull_in - 0.035
    tissue[brain] = _BRAIN
    # Radial depth below the inner skull surface, in mm (approximately).
    mean_axis = float(np.mean(head))
    depth = (skull_in - r) * mean_axis

    # Tentorium: tent over the posterior fossa, z_t(x, y) highest at the midline front.
    y0 = rng.uniform(-0.05, 0.08) * ay  # front (incisura) of the tent
    z_apex = rng.uniform(-0.02, 0.10) * az
    slope_x = rng.uniform(0.35, 0.55)
    slope_y = rng.uniform(0.30, 0.45)
    z_tent = z_apex - slope_x * np.abs(x) - slope_y * np.clip(y - y0, 0, None)
    behind = y > y0
    notch = (np.abs(x) < 0.20 * ax) & (y < y0 + 0.22 * ay)
    tent_sheet = (np.abs(z - z_tent) <= thick / 2) & behind & ~notch & (depth > sinus_r * 1.6) & (r < skull_in)

    # Cerebellum: two merged lobes below the tentorium.
    cb_c = np.array([0.0, 0.50 * ay, z_apex - 0.34 * az]) + rng.uniform(-3, 3, size=3) * scale
    cb_ax = np.array([0.72 * ax, 0.42 * ay, 0.40 * az]) * rng.uniform(0.9, 1.1, size=3)
    lobe = np.zeros(shape_kji, dtype=bool)
    for side in (-1, 1):
        cx = side * 0.28 * cb_ax[0]
        lobe |= (((x - cx) / (0.8 * cb_ax[0])) ** 2 + ((y - cb_c[1]) / cb_ax[1]) ** 2
                 + ((z - cb_c[2]) / cb_ax[2]) ** 2) <= 1.0
    cerebellum = lobe & (z < z_tent - thick / 2 - 0.5 * spacing) & behind & (depth > 1.5 * spacing)

    # Falx: mid-sagittal sheet above a free edge, joining the tentorium posteriorly.
    falx_tilt = rng.uniform(-0.03, 0.03)
    mid = x - falx_tilt * z
    z_edge_front = rng.uniform(0.18, 0.28) * az
    z_edge = np.where(behind, np.maximum(z_tent + thick / 2, z_edge_front - 0.25 * (y - y0)),
                      z_edge_front + 0.10 * np.clip(-(y - y0), 0, None))
    falx_sheet = (np.abs(mid) <= thick / 2) & (z > z_edge) & (depth > sinus_r * 1.6) & (r < skull_in)

    # Sinuses: tubes just under the inner skull surface.
    under_skull = np.abs(depth - sinus_r * 0.9) <= sinus_r
    z_conf = z_apex - slope_y * (0.9 * ay - y0)  # height of the tent at the back (confluence)
    sagittal = under_skull & (np.abs(mid) <= sinus_r) & (z > np.where(behind, z_conf, z_edge) - sinus_r)
    transverse = under_skull & behind & (np.abs(z - z_tent) <= sinus_r) & (y > y0 + 0.3 * ay)

    # Ventricles: two lateral bodies near the centre, slightly bent.
    v_c = np.array([0.0, rng.uniform(-0.08, 0.02) * ay, rng.uniform(0.08, 0.16) * az])
    v_ax = np.array([0.085 * ax, 0.30 * ay, 0.13 * az]) * rng.uniform(0.85, 1.15, size=3)
    v_ax[0] = max(v_ax[0], 2.5 * spacing)
    v_sep = max(0.10 * ax, v_ax[0] + 1.5 * spacing)
    ventricles = np.zeros(shape_kji, dtype=bool)
    bend = 0.25 * v_ax[2]
    for side in (-1, 1):
        zz = z - v_c[2] + bend * ((y - v_c[1]) / v_ax[1]) ** 2
        ventricles |= (((x - side * v_sep) / v_ax[0]) ** 2 + ((y - v_c[1]) / v_ax[1]) ** 2 + (zz / v_ax[2]) ** 2) <= 1.0
    ventricles &= brain

    # Paint in order: later structures win where they touch.
    tissue[cerebellum] = _CEREBELLUM
    tissue[ventricles] = _VENTRICLES
    tissue[tent_sheet & brain] = _TENTORIUM
    tissue[falx_sheet & brain & ~tent_sheet] = _FALX
    tissue[(sagittal | transverse) & (r < skull_in)] = _SINUS
    return tissue


def generate_case(
    seed: int,
    size: tuple[int, int, int] = SMALL_SIZE,
    spacing: float = SMALL_SPACING,
    min_thickness_voxels: float = 2.0,
) -> PhantomCase:
    """Generate one phantom case.

    Args:
        seed: random seed (the case is a pure function of its arguments).
        size: grid size in SimpleITK (x, y, z) order.
        spacing: isotropic voxel spacing in mm.
        min_thickness_voxels: the least thickness of the sheet-like structures, in voxels.
    """
    rng = np.random.default_rng(seed)
    shape_kji = (int(size[2]), int(size[1]), int(size[0]))
    tissue = _tissue_map(shape_kji, float(spacing), rng, min_thickness_voxels)
    label = np.where(tissue <= 5, tissue, 0).astype(np.uint8)

    images = {}
    for modality, table in _INTENSITY.items():
        lut = np.zeros(256, dtype=np.float32)
        gain = rng.uniform(0.9, 1.1) if modality != "ct" else 1.0
        for cls, value in table.items():
            jitter = 1.0 + (rng.uniform(-0.06, 0.06) if cls not in (_AIR,) else 0.0)
            lut[cls] = value * jitter * gain
        img = lut[tissue]
        if modality == "ct":
            img = img + (tissue != _AIR) * _smooth_field(rng, shape_kji, 4.0)
        else:
            bias = 1.0 + _smooth_field(rng, shape_kji, 0.12)
            img = img * bias
        img = ndimage.gaussian_filter(img, sigma=0.6)  # partial volume
        img = img + rng.normal(0.0, _NOISE[modality], size=img.shape).astype(np.float32)
        if modality != "ct":
            img = np.clip(img, 0, None)
        images[modality] = img.astype(np.int16 if modality == "ct" else np.float32)

    origin = tuple(-(n - 1) / 2 * spacing for n in size)

    def to_image(arr: np.ndarray) -> sitk.Image:
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((float(spacing),) * 3)
        im.SetOrigin(origin)
        return im

    return PhantomCase(to_image(images["ct"]), to_image(images["t1"]), to_image(images["t2"]), to_image(label))


def case_files(root: Path, case_id: str) -> dict[str, Path]:
    """ABCs file names of one case: root/NNN/NNN_{ct,t1,t2,labelmap_task1}.mha."""
    d = Path(root) / case_id
    return {
        "ct": d / f"{case_id}_ct.mha",
        "t1": d / f"{case_id}_t1.mha",
        "t2": d / f"{case_id}_t2.mha",
        "label": d / f"{case_id}_labelmap_task1.mha",
    }


def write_case(case: PhantomCase, root: Path, case_id: str) -> dict[str, Path]:
    files = case_files(root, case_id)
    files["ct"].parent.mkdir(parents=True, exist_ok=True)
    for key in ("ct", "t1", "t2", "label"):
        sitk.WriteImage(getattr(case, key), str(files[key]), useCompression=True)
    return files


def generate_dataset(
    out: Path,
    cases: int,
    seed: int = 0,
    size: tuple[int, int, int] = SMALL_SIZE,
    spacing: float = SMALL_SPACING,
    first_id: int = 1,
    min_thickness_voxels: float = 2.0,
) -> list[str]:
    """Write ``cases`` phantoms into ``out`` in the ABCs layout; returns the case ids.

    Case ids are zero-padded three-digit numbers starting at ``first_id``; case ``n`` uses the seed
    ``seed * 100003 + n`` so sets generated with different seeds do not share cases.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = []
    for n in range(cases):
        case_id = f"{first_id + n:03d}"
        case = generate_case(seed * 100003 + first_id + n, size, spacing, min_thickness_voxels)
        write_case(case, out, case_id)
        ids.append(case_id)
    (out / "phantom.json").write_text(
        json.dumps({"generator": "brainbarriers_training.phantom", "seed": seed, "size": list(size), "spacing": spacing,
                    "cases": ids}, indent=1)
    )
    return ids

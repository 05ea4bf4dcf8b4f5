"""Build the demo training material: atlas and anatomy-derived task-1 labels on the sample grid.

Labels (ABCs task-1 values, brainbarriers.structures.OUTPUT_LABELS):

* cerebellum (1) and ventricles (5): SPM's Neuromorphometrics maximum-probability labelling
  (labels_Neuromorphometrics.nii, CC BY-NC; in the spm-runtime wheel), resampled (nearest) onto
  the 1.2 mm sample grid. Cerebellum = exterior + white matter + vermis; ventricles = lateral,
  inferior lateral, third and fourth ventricles.
* falx cerebri (2): a 2-3 voxel sheet on the mid-sagittal plane (a plane fitted to the boundary
  between the atlas's left and right labels), inside the intracranial mask, from the inner table
  down to the highest tissue that crosses the midline (corpus callosum, or the cerebellum behind
  it, so the falx meets the tentorium) with one voxel of gap.
* tentorium cerebelli (4): the mid-surface between the cerebellum and the supratentorial brain
  (|d_cerebellum - d_cerebrum| <= 1.2 mm with both distances <= 8 mm), above cerebellum, inside
  the intracranial mask, away from the brainstem (> 5 mm: the tentorial notch stays open).
* sinuses (3): the superior sagittal sinus as a triangular tube along the falx's attached upper
  edge (within 7 mm of the inner table, narrowing with depth, wider posteriorly), from the
  torcula level upwards; the transverse sinuses as a tube (radius 4.5 mm) along the tentorium's
  posterior-lateral attachment to the inner table (behind the cerebellum's centre).

Later labels overwrite earlier ones in this order: cerebellum, ventricles, tentorium, falx,
sinuses. These constructed labels place each structure where the anatomy puts it; they are not
expert contours.

Usage::

    python scripts/build_demo_labels.py [--work /work/demo_work] [--data /work/demo_data]
        [--heldout /work/demo_heldout] [--copies 6] [--seed 0]

Needs scripts/build_sample.py to have run (it fetches the sources into --work).
Writes the ABCs layout: DATA/NNN/NNN_{ct,t1,t2}.mha + NNN_labelmap_task1.mha, case 001 the
sample itself, 002.. augmented copies (random affine + smooth elastic warp, T1 alternating
between avg152T1 and avg305T1); HELDOUT/101 the MNI152NLin6Asym T1 (nimare, T1 only) with the
same labels (held-out evaluation: an image the model never saw).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from brainbarriers.geometry import array_to_image, resample_onto
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_sample  # noqa: E402

CEREBELLUM = (38, 39, 40, 41, 71, 72, 73)
VENTRICLES = (4, 11, 49, 50, 51, 52)
BRAINSTEM = (35,)
NOT_CEREBRUM = (0, 46, *CEREBELLUM, *BRAINSTEM, 11)
SPACING = build_sample.SPACING


def atlas_names(xml: Path) -> dict[int, str]:
    text = xml.read_text(encoding="latin-1")
    return {int(i): n for i, n in re.findall(r"<index>(\d+)</index><name>([^<]*)</name>", text)}


def on_grid(image: sitk.Image, nearest: bool) -> np.ndarray:
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.GetArrayFromImage(resample_onto(image, build_sample.model_grid(), interp))


def edt(mask: np.ndarray) -> np.ndarray:
    """Distance (mm) from every voxel to the nearest voxel of ``mask``."""
    return ndimage.distance_transform_edt(~mask, sampling=SPACING).astype(np.float32)


def midplane(atlas: np.ndarray, names: dict[int, str]) -> np.ndarray:
    """Array i (column, patient right->left) of the mid-sagittal plane for every (k, j).

    Fits i = a + b*j + c*k to the midpoints between the atlas's right and left labels, row by row.
    """
    left = np.isin(atlas, [v for v, n in names.items() if n.startswith("Left")])
    right = np.isin(atlas, [v for v, n in names.items() if n.startswith("Right")])
    ni = atlas.shape[2]
    idx = np.arange(ni)
    # grid i runs towards patient left (LPS +x): right labels at low i, left labels at high i
    right_max = np.where(right, idx, -1).max(axis=2)
    left_min = np.where(left, idx, ni).min(axis=2)
    ok = (right_max >= 0) & (left_min < ni) & (left_min > right_max - 4)
    k, j = np.nonzero(ok)
    mid = 0.5 * (right_max[ok] + left_min[ok])
    design = np.column_stack([np.ones_like(k), j, k]).astype(float)
    coef = np.linalg.lstsq(design, mid, rcond=None)[0]
    for _ in range(2):  # trim outliers
        resid = np.abs(design @ coef - mid)
        keep = resid < 3 * np.median(resid) + 0.5
        coef = np.linalg.lstsq(design[keep], mid[keep], rcond=None)[0]
    kk, jj = np.meshgrid(np.arange(atlas.shape[0]), np.arange(atlas.shape[1]), indexing="ij")
    return coef[0] + coef[1] * jj + coef[2] * kk


def build_labels(atlas: np.ndarray, icv: np.ndarray, names: dict[int, str]) -> tuple[np.ndarray, dict]:
    """Task-1 label map (uint8, K,J,I) on the sample grid and a few construction facts."""
    nk, nj, ni = atlas.shape
    kk, jj, ii = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    cerebellum = np.isin(atlas, CEREBELLUM)
    ventricles = np.isin(atlas, VENTRICLES)
    brainstem = np.isin(atlas, BRAINSTEM)
    cerebrum = ~np.isin(atlas, NOT_CEREBRUM)
    cortex = atlas >= 100  # Neuromorphometrics cortical parcels are numbered from 100
    depth = ndimage.distance_transform_edt(icv, sampling=SPACING).astype(np.float32)

    # tentorium: mid-surface between cerebellum and cerebrum, over the cerebellum
    d_cb, d_cr, d_bs = edt(cerebellum), edt(cerebrum), edt(brainstem)
    cb_below = np.maximum.accumulate(cerebellum, axis=0)
    tentorium = (np.abs(d_cb - d_cr) <= 1.2) & (d_cb <= 8) & (d_cr <= 8) & icv & cb_below & (d_bs > 5)
    tentorium &= ~ventricles
    tentorium = _largest_components(tentorium, 2)

    # falx: mid-sagittal sheet above the highest tissue crossing the midline
    mid = midplane(atlas, names)
    dx = ii - mid[:, :, None]
    on_mid = np.abs(dx) <= 1.0
    crossing = on_mid & (atlas > 0) & (atlas != 46) & ~cortex | (on_mid & (tentorium | cerebellum))
    top = np.where(crossing, kk, -1).max(axis=(0, 2))  # highest crossing tissue per j
    falx = on_mid & icv & (kk > top[None, :, None] + 1) & ~cerebellum

    # superior sagittal sinus: tube along the falx's attached (upper) edge
    cb_idx = np.argwhere(cerebellum)
    cb_centre_j = cb_idx[:, 1].mean()
    attach_t = tentorium & (depth <= 3.0)
    torcula = attach_t & (np.abs(dx) <= 2)
    k_torcula = int(np.argwhere(torcula)[:, 0].mean()) if torcula.any() else int(cb_idx[:, 0].max())
    j_front = np.nonzero(falx.any(axis=(0, 2)))[0].min()
    post = np.clip((jj - j_front) / max(nj - 1 - j_front, 1), 0, 1)  # 0 front .. 1 back
    max_depth = 5.0 + 3.0 * post
    half_width = (2.5 + 3.0 * post) * np.clip(1 - depth / max_depth, 0, 1) + 0.6
    sss = icv & (depth <= max_depth) & (np.abs(dx) * SPACING <= half_width) & (kk >= k_torcula - 1)

    # transverse sinuses: tube along the tentorium's posterior-lateral attachment
    attach = attach_t & (jj > cb_centre_j)
    ts = icv & (depth <= 8.0) & (edt(attach) <= 4.5) & (kk <= k_torcula + 6) if attach.any() else np.zeros_like(icv)

    labels = np.zeros(atlas.shape, np.uint8)
    for value, mask in ((1, cerebellum), (5, ventricles), (4, tentorium), (2, falx), (3, sss | ts)):
        labels[mask] = value
    facts = {"midplane_i_centre": float(mid.mean()), "torcula_k": k_torcula,
             "cerebellum_centre_j": float(cb_centre_j)}
    return labels, facts


def _largest_components(mask: np.ndarray, n: int) -> np.ndarray:
    lab, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count <= n:
        return mask
    sizes = ndimage.sum(mask, lab, range(1, count + 1))
    keep = np.argsort(sizes)[::-1][:n] + 1
    return np.isin(lab, keep)


def volumes_ml(labels: np.ndarray) -> dict[int, float]:
    return {v: float((labels == v).sum() * SPACING**3 / 1000) for v in range(1, 6)}


def to_image(array: np.ndarray) -> sitk.Image:
    return array_to_image(array, build_sample.model_grid())


def random_warp(rng: np.random.Generator) -> sitk.Transform:
    """Random affine (rotation +-12 deg, scale 0.9..1.1, shear, shift +-8 mm) + smooth elastic
    displacement (B-spline, 5x5x5 control grid, +-4 mm), about the head centre."""
    ref = build_sample.model_grid()
    centre = ref.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in ref.GetSize()])
    affine = sitk.AffineTransform(3)
    affine.SetCenter(centre)
    angles = np.deg2rad(rng.uniform(-12, 12, 3))
    rot = sitk.Euler3DTransform()
    rot.SetRotation(*angles)
    matrix = np.array(rot.GetMatrix()).reshape(3, 3) @ np.diag(rng.uniform(0.9, 1.1, 3))
    matrix = matrix + rng.uniform(-0.04, 0.04, (3, 3)) * (1 - np.eye(3))
    affine.SetMatrix(matrix.ravel().tolist())
    affine.SetTranslation(rng.uniform(-8, 8, 3).tolist())
    bspline = sitk.BSplineTransformInitializer(ref, [4, 4, 4])
    params = rng.normal(0, 2.0, len(bspline.GetParameters())).clip(-4, 4)
    bspline.SetParameters(params.tolist())
    return sitk.CompositeTransform([affine, bspline])


def write_case(root: Path, case: str, images: dict[str, sitk.Image], labels: sitk.Image) -> None:
    folder = root / case
    folder.mkdir(parents=True, exist_ok=True)
    for key, image in images.items():
        sitk.WriteImage(image, str(folder / f"{case}_{key}.mha"), useCompression=True)
    sitk.WriteImage(sitk.Cast(labels, sitk.sitkUInt8), str(folder / f"{case}_labelmap_task1.mha"))


def intensity_jitter(image: sitk.Image, rng: np.random.Generator, is_ct: bool) -> sitk.Image:
    """Random gamma and a smooth multiplicative bias for MR; a small HU offset/noise for CT."""
    a = sitk.GetArrayFromImage(image).astype(np.float32)
    if is_ct:
        a = a + rng.uniform(-15, 15) + rng.normal(0, rng.uniform(0, 12), a.shape).astype(np.float32)
        out = sitk.GetImageFromArray(np.round(a).astype(np.int16))
    else:
        hi = max(float(a.max()), 1e-6)
        a = hi * (a / hi) ** rng.uniform(0.7, 1.4)
        k, j, i = np.meshgrid(*[np.linspace(-1, 1, s) for s in a.shape], indexing="ij")
        c = rng.uniform(-0.15, 0.15, 3)
        a = a * (1 + c[0] * k + c[1] * j + c[2] * i)
        out = sitk.GetImageFromArray(a.astype(np.float32))
    out.CopyInformation(image)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/work/demo_work"))
    parser.add_argument("--data", type=Path, default=Path("/work/demo_data"))
    parser.add_argument("--heldout", type=Path, default=Path("/work/demo_heldout"))
    parser.add_argument("--sample", type=Path, default=Path(__file__).resolve().parents[1] / "Resources/SampleData")
    parser.add_argument("--copies", type=int, default=6, help="augmented copies besides case 001")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout-only", action="store_true", help="write only the held-out cases")
    args = parser.parse_args(argv)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    src = args.work / "sources"
    names = atlas_names(src / "labels_Neuromorphometrics.xml")
    atlas = on_grid(sitk.ReadImage(str(src / "labels_Neuromorphometrics.nii")), nearest=True)
    icv = on_grid(sitk.ReadImage(str(src / "mask_ICV.nii"), sitk.sitkFloat32), nearest=False) > 0.5
    labels, facts = build_labels(atlas, icv, names)
    print("facts", facts)
    print("volumes (ml)", {k: round(v, 1) for k, v in volumes_ml(labels).items()})
    label_image = to_image(labels)
    sitk.WriteImage(label_image, str(args.work / "demo_labels.nrrd"), useCompression=True)

    ref = build_sample.model_grid()
    if not args.heldout_only:
        write_training_cases(args, src, label_image, ref)
    write_heldout_cases(args.heldout, src, label_image, ref)
    return 0


def write_training_cases(args, src: Path, label_image: sitk.Image, ref: sitk.Image) -> None:
    sample = {k: sitk.ReadImage(str(args.sample / f"sample_{k}.nrrd")) for k in ("ct", "t1", "t2")}
    write_case(args.data, "001", sample, label_image)
    t1_alt = sitk.Cast(sitk.Round(sitk.Clamp(sitk.Resample(
        sitk.ReadImage(str(src / "avg305T1.nii"), sitk.sitkFloat32), build_sample.model_grid(),
        sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32), sitk.sitkFloat32, 0, 1) * 255), sitk.sitkUInt8)
    rng = np.random.default_rng(args.seed)
    for n in range(args.copies):
        case = f"{n + 2:03d}"
        warp = random_warp(rng)
        sources = dict(sample, t1=t1_alt if n % 2 == 0 else sample["t1"])
        images = {}
        for key, image in sources.items():
            default = -1024.0 if key == "ct" else 0.0
            moved = sitk.Resample(image, ref, warp, sitk.sitkLinear, default, sitk.sitkFloat32)
            images[key] = intensity_jitter(moved, rng, key == "ct")
        moved_labels = sitk.Resample(label_image, ref, warp, sitk.sitkNearestNeighbor, 0)
        write_case(args.data, case, images, moved_labels)
        print("wrote case", case, flush=True)



def write_heldout_cases(root: Path, src: Path, label_image: sitk.Image, ref: sitk.Image) -> None:
    """101: the MNI152NLin6Asym T1 in MNI pose; 102: the same under a random affine + elastic warp
    (a pose the training copies did not use: its own seed). T1 only."""
    t1_source = sitk.ReadImage(str(src / "MNI152NLin6Asym_res-01_T1w.nii.gz"), sitk.sitkFloat32)
    t1_held = sitk.Resample(t1_source, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    write_case(root, "101", {"t1": t1_held}, label_image)
    warp = random_warp(np.random.default_rng(101))
    t1_warped = sitk.Resample(t1_source, ref, warp, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    write_case(root, "102", {"t1": t1_warped}, sitk.Resample(label_image, ref, warp, sitk.sitkNearestNeighbor, 0))
    print("wrote held-out cases 101, 102 (T1 only)")


if __name__ == "__main__":
    raise SystemExit(main())

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
        [--synthetic 64] [--seed 0] [--conceal-thin P]

Needs scripts/build_sample.py to have run (it fetches the sources into --work).
Writes WORK/demo_labels.nrrd, the tissue map WORK/demo_tissues.nrrd (training/synth.py classes)
and the ABCs layout: DATA/NNN/NNN_{ct,t1,t2}.mha + NNN_labelmap_task1.mha, case 001 the sample
itself, 002.. heads drawn by the generator from the tissue map (``--conceal-thin``: its
probability of hiding the thin structures; default the generator's).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from brainbarriers.geometry import array_to_image, resample_onto
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_sample  # noqa: E402
from brainbarriers_training import synth  # noqa: E402

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


def write_case(root: Path, case: str, images: dict[str, sitk.Image], labels: sitk.Image) -> None:
    folder = root / case
    folder.mkdir(parents=True, exist_ok=True)
    for key, image in images.items():
        sitk.WriteImage(image, str(folder / f"{case}_{key}.mha"), useCompression=True)
    sitk.WriteImage(sitk.Cast(labels, sitk.sitkUInt8), str(folder / f"{case}_labelmap_task1.mha"))


TPM_BONE, TPM_SOFT, TPM_AIR = 3, 4, 5  # SPM TPM.nii volumes (GM, WM, CSF, bone, soft tissue, air)
DEEP_GREY = (23, 30, 31, 32, 36, 37, 47, 48, 55, 56, 57, 58, 59, 60, 61, 62, 69, 75, 76)
CEREBELLAR_WHITE = (40, 41)
CEREBRAL_WHITE = (44, 45)


def tpm_on_grid(path: Path) -> np.ndarray:
    """SPM's six tissue probability maps on the sample grid, shape (6, K, J, I)."""
    tpm = sitk.ReadImage(str(path), sitk.sitkFloat32)
    size = list(tpm.GetSize())
    return np.stack([on_grid(sitk.Extract(tpm, size[:3] + [0], [0, 0, 0, c]), nearest=False)
                     for c in range(size[3])])


def build_tissues(atlas: np.ndarray, icv: np.ndarray, tpm: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The generator's tissue map (training/synth.py TISSUES) on the sample grid.

    Outside the intracranial mask: skull, scalp or air by SPM's TPM; inside: the
    Neuromorphometrics classes; the five targets exactly as in ``labels``.
    """
    v = synth.TISSUE_VALUE
    tissue = np.full(atlas.shape, v["air"], np.uint8)
    head = tpm[TPM_AIR] < 0.5
    outside = np.argmax(tpm, axis=0)
    tissue[head] = v["scalp"]
    tissue[head & (outside == TPM_BONE)] = v["skull"]
    inside = icv | (atlas > 0)
    tissue[inside] = v["csf"]
    tissue[inside & (atlas >= 100)] = v["cortex"]
    tissue[inside & np.isin(atlas, CEREBRAL_WHITE)] = v["white_matter"]
    tissue[inside & np.isin(atlas, DEEP_GREY)] = v["deep_grey"]
    tissue[inside & np.isin(atlas, BRAINSTEM)] = v["brainstem"]
    tissue[np.isin(atlas, CEREBELLUM)] = v["cerebellar_cortex"]
    tissue[np.isin(atlas, CEREBELLAR_WHITE)] = v["cerebellar_white_matter"]
    cerebellar = np.isin(tissue, (v["cerebellar_cortex"], v["cerebellar_white_matter"]))
    tissue[(labels == 0) & cerebellar] = v["csf"]
    tissue[(labels == 1) & ~cerebellar] = v["cerebellar_cortex"]
    for label, key in ((5, "ventricles"), (4, "tentorium"), (2, "falx"), (3, "sinus")):
        tissue[labels == label] = v[key]
    assert np.array_equal(synth.TASK1_LUT[tissue], labels), "tissue map disagrees with the labels"
    return tissue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/work/demo_work"))
    parser.add_argument("--data", type=Path, default=Path("/work/demo_data"))
    parser.add_argument("--sample", type=Path, default=Path(__file__).resolve().parents[1] / "Resources/SampleData")
    parser.add_argument("--synthetic", type=int, default=48, help="generated cases besides case 001")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conceal-thin", type=float, default=synth.SynthParams.conceal_thin)
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
    tissue = build_tissues(atlas, icv, tpm_on_grid(src / "TPM.nii"), labels)
    tissue_path = args.work / "demo_tissues.nrrd"
    sitk.WriteImage(to_image(tissue), str(tissue_path), useCompression=True)
    print("tissue map", tissue_path, {t.key: int((tissue == t.value).sum()) for t in synth.TISSUES})

    sample = {k: sitk.ReadImage(str(args.sample / f"sample_{k}.nrrd")) for k in ("ct", "t1", "t2")}
    write_case(args.data, "001", sample, label_image)
    params = dataclasses.replace(synth.SynthParams(), conceal_thin=args.conceal_thin)
    for case in synth.write_cases(tissue_path, args.data, args.synthetic, args.seed, first_id=2,
                                  overwrite=True, params=params):
        print("wrote synthetic case", case, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

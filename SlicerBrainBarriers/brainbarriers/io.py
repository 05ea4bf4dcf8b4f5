"""Reading input images (NIfTI, NRRD, MHA or a DICOM series folder) with checks that name the problem.

Every check raises ``InputError`` with one line: missing/unreadable file, not a 3D scalar image,
constant or NaN-filled image, absurd spacing, a CT given as an MR (intensity range).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

#: Plausible voxel spacing range in mm (outside: wrong units or a broken header).
SPACING_RANGE_MM = (0.05, 20.0)
#: Smallest size of every image axis: a "3D" image thinner than this is a slice, not a volume.
MIN_AXIS_SIZE = 4


def case_name(path: str | Path) -> str:
    """File stem without image extensions (``/d/001_ct.nii.gz`` -> ``001_ct``; folder -> its name)."""
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr", ".gz"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns on stderr about every non-DICOM file
    try:
        series = reader.GetGDCMSeriesIDs(str(folder))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    if not series:
        raise InputError(f"{folder} is a folder without a DICOM series")
    # The series with the most slices is the volume (scouts and localisers have few).
    files = max((reader.GetGDCMSeriesFileNames(str(folder), s) for s in series), key=len)
    reader.SetFileNames(files)
    return reader.Execute()


def read_image(path: str | Path, modality: str = "image") -> sitk.Image:
    """Read one 3D scalar image as float32 and check it (raises InputError with one line)."""
    path = Path(path).expanduser()
    label = f"{modality} {path}"
    if not path.exists():
        raise InputError(f"{label}: file not found")
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        else:
            image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except (RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()
        reason = next((line.strip() for line in first if "ERROR" in line or "Could not" in line), "unknown format")
        reason = re.sub(r"\(0x[0-9a-f]+\)", "", reason).rstrip(":")
        raise InputError(f"{label}: cannot read the image ({reason[:160]})") from None
    check_image(image, label)
    image = sitk.Cast(image, sitk.sitkFloat32)
    check_values(image, label, modality)
    return image


def check_image(image: sitk.Image, label: str) -> None:
    """Shape and geometry checks: 3D, scalar, not a slice, sane spacing."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{label}: a vector/colour image ({image.GetNumberOfComponentsPerPixel()} components); a scalar volume is needed")
    if image.GetDimension() != 3:
        raise InputError(f"{label}: a {image.GetDimension()}D image; a 3D volume is needed")
    size = image.GetSize()
    if min(size) < MIN_AXIS_SIZE:
        raise InputError(f"{label}: size {size} is a slice or a thin stack, not a 3D volume")
    lo, hi = SPACING_RANGE_MM
    spacing = image.GetSpacing()
    if not all(lo <= s <= hi for s in spacing):
        raise InputError(f"{label}: absurd voxel spacing {tuple(round(s, 4) for s in spacing)} mm (expected {lo}-{hi} mm)")
    d = np.array(image.GetDirection()).reshape(3, 3)
    if not np.allclose(np.abs(np.linalg.det(d)), 1.0, atol=1e-3):
        raise InputError(f"{label}: the direction matrix is not a rotation")


def check_values(image: sitk.Image, label: str, modality: str) -> None:
    """Value checks: no NaN/inf, not constant, an MR is not a CT in Hounsfield units."""
    a = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(a)
    if not finite.all():
        frac = 1.0 - finite.mean()
        raise InputError(f"{label}: {frac:.0%} of the voxels are NaN or infinite")
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= 1e-6 * max(1.0, abs(hi)):
        raise InputError(f"{label}: the image is constant ({lo:g}); it holds no anatomy")
    if modality in ("t1", "t2"):
        # MR magnitudes are non-negative; a CT keeps air near -1000 HU over much of the field of view.
        air = float((a < -500).mean())
        if air > 0.05:
            raise InputError(
                f"{label}: {air:.0%} of the voxels are below -500, which looks like a CT in Hounsfield units, not an MR"
            )

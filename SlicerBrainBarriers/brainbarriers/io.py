"""Reading input images (NIfTI, NRRD, MHA/MHD or a DICOM series folder) with checks that name the problem.

``read_image`` is the one reader of the CLI, the Slicer module's runs and training's ``prepare``.
Every check raises ``InputError`` with one line: missing/unreadable file, a damaged or truncated file
(see ``integrity``), a DICOM series with missing, duplicated or unevenly spaced slices (see
``dicom_series``), absurd dimensions (refused from the header, before any allocation), not a 3D
scalar image, constant or NaN-filled image, absurd spacing, a CT given as an MR (intensity range).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .integrity import Header, check_whole, quiet_stderr, read_header, sitk_reason

#: Plausible voxel spacing range in mm (outside: wrong units or a broken header).
SPACING_RANGE_MM = (0.05, 20.0)
#: Smallest size of every image axis: a "3D" image thinner than this is a slice, not a volume.
MIN_AXIS_SIZE = 4
#: Image extensions removed from a file name to make a case name (longest first).
IMAGE_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gz")
#: Roles ``read_image`` knows: the modalities, a label map, or any other image.
ROLES = ("ct", "t1", "t2", "label", "image")
#: Longest case name (it becomes part of several file names).
MAX_CASE_LENGTH = 100


def case_name(path: str | Path) -> str:
    """A valid case name made from a file or folder name (``/d/T1 scan.nii.gz`` -> ``T1_scan``).

    Image extensions are dropped, accents folded to ASCII, every run of other characters becomes one
    ``_``, and the name starts and ends with a letter or digit; an empty result is ``case``. The result
    always passes ``cases.check_case_name``.
    """
    name = Path(path).name
    for ext in IMAGE_EXTENSIONS:
        if name.lower().endswith(ext) and len(name) > len(ext):
            name = name[: -len(ext)]
            break
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_name)
    safe = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9-]+$", "", safe)[:MAX_CASE_LENGTH].rstrip("._")
    return safe or "case"


def image_header(path: str | Path, modality: str = "image") -> Header:
    """What an image file or DICOM folder claims (size, spacing, pixel type), checked for absurd values
    and read without its voxels: the resource guard's input."""
    path = Path(path).expanduser()
    label = f"{modality} {path}"
    if not path.exists():
        raise InputError(f"{label}: file not found")
    if path.is_dir():
        from .dicom_series import find_series

        header = find_series(path, label).header
    else:
        header = read_header(path, label)
    check_header(header, label)
    return header


def read_image(path: str | Path, role: str = "image") -> sitk.Image:
    """Read one 3D scalar image, proven whole, and check it (raises InputError with one line).

    ``role``: "ct", "t1", "t2" (float32, value checks for that modality), "image" (float32) or
    "label" (pixel type kept, integer values required).
    """
    path = Path(path).expanduser()
    label = f"{role} {path}"
    if not path.exists():
        raise InputError(f"{label}: file not found")
    if path.is_dir():
        from .dicom_series import find_series, read_series

        series = find_series(path, label)
        check_header(series.header, label)
        image = read_series(series, label)
    else:
        header = read_header(path, label)
        check_header(header, label)
        check_whole(path, header, label)
        try:
            with quiet_stderr() as chatter:
                image = sitk.ReadImage(str(path))
        except (RuntimeError, OSError) as exc:
            raise InputError(f"{label}: cannot read the image ({sitk_reason(exc, ''.join(chatter))})") from None
    check_image(image, label)
    if role == "label":
        return check_label(image, label)
    image = sitk.Cast(image, sitk.sitkFloat32)
    check_values(image, label, role)
    return image


def check_header(header: Header, label: str) -> None:
    """The shape and geometry checks of ``check_image``, on the header (before the voxels are read)."""
    if header.components != 1:
        raise InputError(f"{label}: a vector/colour image ({header.components} components); a scalar volume is needed")
    if len(header.size) != 3:
        raise InputError(f"{label}: a {len(header.size)}D image; a 3D volume is needed")
    _check_geometry(header.size, header.spacing, header.direction, label)


def check_label(image: sitk.Image, label: str) -> sitk.Image:
    """A label map: integer pixels with non-negative values."""
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        a = sitk.GetArrayViewFromImage(image)
        if not np.isfinite(a).all() or not np.equal(np.mod(a, 1), 0).all():
            raise InputError(f"{label}: a label map needs whole-number values")
        image = sitk.Cast(image, sitk.sitkInt32)
    if float(sitk.GetArrayViewFromImage(image).min()) < 0:
        raise InputError(f"{label}: a label map cannot hold negative values")
    return image


def check_image(image: sitk.Image, label: str) -> None:
    """Shape and geometry checks: 3D, scalar, not a slice, sane spacing."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{label}: a vector/colour image ({image.GetNumberOfComponentsPerPixel()} components); a scalar volume is needed")
    if image.GetDimension() != 3:
        raise InputError(f"{label}: a {image.GetDimension()}D image; a 3D volume is needed")
    _check_geometry(image.GetSize(), image.GetSpacing(), image.GetDirection(), label)


def _check_geometry(size, spacing, direction, label: str) -> None:
    if min(size) < MIN_AXIS_SIZE:
        raise InputError(f"{label}: size {tuple(size)} is a slice or a thin stack, not a 3D volume")
    lo, hi = SPACING_RANGE_MM
    if not all(lo <= s <= hi for s in spacing):  # NaN fails too
        raise InputError(f"{label}: absurd voxel spacing {tuple(round(s, 4) for s in spacing)} mm (expected {lo}-{hi} mm)")
    d = np.array(direction, dtype=float).reshape(3, 3)
    if not np.isfinite(d).all() or not np.allclose(np.abs(np.linalg.det(d)), 1.0, atol=1e-3):
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

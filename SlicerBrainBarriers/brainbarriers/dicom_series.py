"""A DICOM series folder proven whole before it is read: every slice present once, evenly spaced.

GDCM (through SimpleITK) silently drops a file it cannot parse (a truncated slice) from a series, and
ITK only warns about missing or unevenly spaced slices; a volume stacked from such a series has the
wrong geometry. Each file's header is read with GDCM (``ReadImageInformation``: no pixel data), the
slice positions are projected on the slice normal, and gaps, duplicates or uneven steps are named.
GDCM is used rather than pydicom because SimpleITK is already a dependency and Slicer ships it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .integrity import Header, check_claimed_size, quiet_stderr

#: Allowed deviation of one slice step from the series' step: the larger of these (mm, fraction).
STEP_TOLERANCE_MM = 0.01
STEP_TOLERANCE_FRACTION = 0.01


@dataclass
class Series:
    files: list[str]
    header: Header


def _floats(text: str, n: int, what: str, label: str, name: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.replace(" ", "").split("\\") if v != ""], dtype=float)
    except ValueError:
        values = np.array([])
    if values.size != n or not np.isfinite(values).all():
        raise InputError(f"{label}: {name} has an invalid {what} ({text.strip()!r})")
    return values


def _file_header(path: str) -> sitk.ImageFileReader | None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.SetImageIO("GDCMImageIO")
    try:
        with quiet_stderr():
            reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def find_series(folder: Path, label: str) -> Series:
    """The largest image series in ``folder``, checked slice by slice (InputError names what is wrong)."""
    reader = sitk.ImageSeriesReader()
    with quiet_stderr():  # GDCM warns on stderr about every non-DICOM file
        ids = reader.GetGDCMSeriesIDs(str(folder))
        groups = {s: list(reader.GetGDCMSeriesFileNames(str(folder), s)) for s in ids}
    if not groups:
        raise InputError(f"{label}: a folder without a DICOM series")
    # The series with the most slices is the volume (scouts and localisers have few).
    uid, files = max(groups.items(), key=lambda kv: len(kv[1]))
    _check_unreadable_members(folder, {f for g in groups.values() for f in g}, uid, label)
    readers = []
    for f in files:
        r = _file_header(f)
        if r is None:
            raise InputError(f"{label}: DICOM file {Path(f).name} cannot be read (truncated or damaged)")
        readers.append(r)
    first = readers[0]
    cols, rows = first.GetSize()[:2]
    frames = first.GetSize()[2] if first.GetDimension() > 2 else 1
    if len(files) == 1 or frames > 1:
        # one (multi-frame) file: GDCM computes the geometry; there are no per-file positions to compare
        size = (cols, rows, frames * len(files))
        spacing = first.GetSpacing()
        check_claimed_size(size, label)
        return Series(files, _header(first, size, spacing))
    orientations, positions = [], []
    for f, r in zip(files, readers):
        name = Path(f).name
        if r.GetSize()[:2] != (cols, rows):
            raise InputError(f"{label}: DICOM file {name} is {r.GetSize()[0]}x{r.GetSize()[1]} pixels where the series is "
                             f"{cols}x{rows}")
        keys = set(r.GetMetaDataKeys())
        if "0020|0032" not in keys or "0020|0037" not in keys:
            raise InputError(f"{label}: DICOM file {name} has no image position/orientation; the slices cannot be stacked")
        positions.append(_floats(r.GetMetaData("0020|0032"), 3, "image position", label, name))
        orientations.append(_floats(r.GetMetaData("0020|0037"), 6, "image orientation", label, name))
    iop = orientations[0]
    for f, o in zip(files, orientations):
        if not np.allclose(o, iop, atol=1e-4):
            raise InputError(f"{label}: DICOM file {Path(f).name} has another slice orientation than the series")
    normal = np.cross(iop[:3], iop[3:])
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise InputError(f"{label}: the DICOM image orientation {tuple(iop)} is not a pair of unit vectors at right angles")
    depth = np.array([float(p @ normal) for p in positions])
    order = np.argsort(depth, kind="stable")
    depth, names = depth[order], [Path(files[i]).name for i in order]
    steps = np.diff(depth)
    step = float(np.median(steps))
    for i, s in enumerate(steps):
        if s < max(STEP_TOLERANCE_MM, 1e-3 * abs(step)):
            raise InputError(f"{label}: DICOM files {names[i]} and {names[i + 1]} are at the same slice position "
                             f"({depth[i]:.2f} mm): a duplicated slice")
    tol = max(STEP_TOLERANCE_MM, STEP_TOLERANCE_FRACTION * step)
    for i, s in enumerate(steps):
        if s > step + tol and s > 1.5 * step:
            missing = int(round(s / step)) - 1
            raise InputError(
                f"{label}: {missing or 'a'} slice(s) missing between DICOM files {names[i]} and {names[i + 1]} "
                f"(positions {depth[i]:.2f} and {depth[i + 1]:.2f} mm, a gap of {s:.2f} mm where the series steps {step:.2f} mm)"
            )
    if np.abs(steps - step).max() > tol:
        i = int(np.argmax(np.abs(steps - step)))
        raise InputError(
            f"{label}: uneven slice spacing: {steps[i]:.3f} mm between DICOM files {names[i]} and {names[i + 1]} where the "
            f"series steps {step:.3f} mm (a tilted or variable-spacing series cannot be stacked as one volume)"
        )
    size = (cols, rows, len(files))
    check_claimed_size(size, label)
    spacing = (*first.GetSpacing()[:2], step)
    return Series([files[i] for i in order], _header(first, size, spacing))


def _check_unreadable_members(folder: Path, listed: set[str], uid: str, label: str) -> None:
    """A DICOM file GDCM left out of every series, that names the chosen series, is a damaged slice."""
    needle = uid.encode("ascii", "ignore")
    for p in sorted(folder.iterdir()):
        if not p.is_file() or str(p) in listed or p.name.upper() == "DICOMDIR" or not _looks_like_dicom(p):
            continue
        try:
            head = p.read_bytes()[: 1 << 16]
        except OSError:
            continue
        if needle and needle in head and _file_header(str(p)) is None:
            raise InputError(f"{label}: DICOM file {p.name} of the series cannot be read (truncated or damaged)")


def _header(reader: sitk.ImageFileReader, size, spacing) -> Header:
    probe = sitk.Image([1, 1], reader.GetPixelID())
    return Header(size=tuple(int(s) for s in size), spacing=tuple(float(s) for s in spacing),
                  origin=tuple(reader.GetOrigin()), direction=tuple(reader.GetDirection()),
                  components=int(reader.GetNumberOfComponents()),
                  bytes_per_component=probe.GetSizeOfPixelComponent(), metadata={})


def read_series(series: Series, label: str) -> sitk.Image:
    """Read the checked series' files in slice order."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series.files)
    try:
        with quiet_stderr() as chatter:
            image = reader.Execute()
    except RuntimeError as exc:
        from .integrity import sitk_reason

        raise InputError(f"{label}: cannot read the DICOM series ({sitk_reason(exc, ''.join(chatter))})") from None
    if image.GetSize() != series.header.size:
        raise InputError(f"{label}: the DICOM series read as size {image.GetSize()} where its headers describe "
                         f"{series.header.size}")
    return image

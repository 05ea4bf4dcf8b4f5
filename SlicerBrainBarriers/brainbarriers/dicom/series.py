"""The source DICOM series behind a segmentation: its instances in slice order, checked against the grid.

The DICOM exports reference every source image by SOP Instance UID, so the labels' slice ``k``
must be matched to the right instance. Instances are sorted along the slice normal (as GDCM does
when SimpleITK reads the series) and the result is checked against the label grid: same number of
slices, rows and columns, the same first position and orientation. A mismatch is an error, never
a silently shifted structure set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

#: Position/orientation tolerance (mm, direction cosines) between the DICOM headers and the label grid.
GRID_TOLERANCE = 1e-3


@dataclass
class SourceSeries:
    """One image series: header-only datasets sorted along the slice normal, and their files."""

    datasets: list  # pydicom Datasets without pixel data
    files: list[Path]

    @property
    def first(self):
        return self.datasets[0]

    @property
    def modality(self) -> str:
        return str(getattr(self.first, "Modality", ""))

    def positions(self) -> np.ndarray:
        return np.array([[float(v) for v in ds.ImagePositionPatient] for ds in self.datasets])

    def orientation(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row direction, column direction and slice normal (LPS)."""
        iop = np.array([float(v) for v in self.first.ImageOrientationPatient])
        row, col = iop[:3], iop[3:]
        return row, col, np.cross(row, col)


def _headers(folder: Path, files: list[Path] | None = None):
    """(path, header) of every DICOM image file below ``folder`` (or of ``files``), in path order."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    for path in sorted(files if files is not None else (p for p in folder.rglob("*") if p.is_file())):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds and "SeriesInstanceUID" in ds:
            yield path, ds


def _read_headers(folder: Path) -> list[tuple[Path, object]]:
    return list(_headers(folder))


def is_dicom_series(path: str | Path) -> bool:
    """True when ``path`` is a folder holding at least one DICOM image with a position."""
    path = Path(path).expanduser()
    return path.is_dir() and next(_headers(path), None) is not None


def load_source_series(folder: str | Path, series_uid: str | None = None, files: list[Path] | None = None) -> SourceSeries:
    """The image series of ``folder`` (the given one, or the one with most instances, as the reader picks).

    ``files``: read these files instead of the folder's (instances found in Slicer's DICOM database).
    """
    folder = Path(folder).expanduser()
    if files is not None:
        headers = list(_headers(folder, [Path(f) for f in files]))
    else:
        headers = _read_headers(folder) if folder.is_dir() else []
    if not headers:
        raise InputError(f"{folder}: not a DICOM series folder (the DICOM exports need a DICOM reference input)")
    groups: dict[str, list[tuple[Path, object]]] = {}
    for path, ds in headers:
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    if series_uid is not None:
        if series_uid not in groups:
            raise InputError(f"{folder}: no series {series_uid}")
        chosen = groups[series_uid]
    else:
        chosen = max(groups.values(), key=len)
    row, col = (np.array([float(v) for v in chosen[0][1].ImageOrientationPatient])[s] for s in (slice(0, 3), slice(3, 6)))
    normal = np.cross(row, col)
    chosen.sort(key=lambda item: float(np.dot(normal, [float(v) for v in item[1].ImagePositionPatient])))
    return SourceSeries([ds for _, ds in chosen], [p for p, _ in chosen])


def check_complete(series: SourceSeries, folder: str | Path = "") -> None:
    """Refuse a series with missing or doubled slices (uneven steps along the slice normal)."""
    where = f"{folder}: " if folder else ""
    if len(series.datasets) < 2:
        raise InputError(f"{where}the DICOM series has {len(series.datasets)} slice; a volume is needed")
    _, _, normal = series.orientation()
    steps = np.diff(series.positions() @ normal)
    typical = float(np.median(steps))
    if typical <= 1e-6:
        raise InputError(f"{where}the DICOM series has several instances at one position")
    bad = np.nonzero(np.abs(steps - typical) > 0.01 * typical + 1e-4)[0]
    if len(bad):
        k = int(bad[0])
        raise InputError(
            f"{where}the DICOM series is not evenly spaced: {steps[k]:.3g} mm between slices {k + 1} and {k + 2}, "
            f"{typical:.3g} mm elsewhere (missing or doubled instances?)"
        )


def check_matches_grid(series: SourceSeries, labels: sitk.Image) -> None:
    """Raise InputError unless the series' slices are exactly the label grid's slices."""
    size = labels.GetSize()
    first = series.first
    if len(series.datasets) != size[2] or int(first.Columns) != size[0] or int(first.Rows) != size[1]:
        raise InputError(
            f"the DICOM series has {len(series.datasets)} slices of {first.Columns}x{first.Rows} but the labels are "
            f"{size[0]}x{size[1]}x{size[2]}; it is not the series that was segmented"
        )
    row, col, normal = series.orientation()
    direction = np.array(labels.GetDirection()).reshape(3, 3)
    if not (np.allclose(direction[:, 0], row, atol=GRID_TOLERANCE) and np.allclose(direction[:, 1], col, atol=GRID_TOLERANCE)):
        raise InputError("the DICOM series' orientation differs from the labels' grid")
    positions = series.positions()
    tol = GRID_TOLERANCE * max(1.0, float(np.abs(positions).max()))
    if not np.allclose(positions[0], labels.GetOrigin(), atol=tol):
        raise InputError("the DICOM series' first slice is not at the labels' origin")
    expected = np.array(labels.GetOrigin()) + np.outer(np.arange(size[2]), direction[:, 2] * labels.GetSpacing()[2])
    if not np.allclose(positions, expected, atol=max(tol, 0.01 * labels.GetSpacing()[2])):
        raise InputError("the DICOM series' slices are not evenly spaced like the labels' grid")


def label_array(labels: sitk.Image) -> np.ndarray:
    """Labels as (slice, row, column), the order of the sorted instances and their pixels."""
    return sitk.GetArrayFromImage(sitk.Cast(labels, sitk.sitkUInt8))

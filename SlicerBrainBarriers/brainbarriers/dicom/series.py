"""The source DICOM series behind a segmentation: its instances in slice order, checked against the grid.

The DICOM exports reference every source image by SOP Instance UID, so the labels' slice ``k``
must be matched to the right instance. The files are those the image reader takes, in its order
(``brainbarriers.dicom_series.find_series``, which also proves the series whole); their headers
are read with pydicom and checked against the label grid: same number of slices, rows and columns,
the same orientation and positions. A mismatch is an error, never a silently shifted structure set.
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


def _headers(folder: Path):
    """(path, header) of every DICOM image file in ``folder``, in path order."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds and "SeriesInstanceUID" in ds:
            yield path, ds


def is_dicom_series(path: str | Path) -> bool:
    """True when ``path`` is a folder holding at least one DICOM image with a position."""
    path = Path(path).expanduser()
    return path.is_dir() and next(_headers(path), None) is not None


def load_source_series(folder: str | Path, files: list[Path] | None = None) -> SourceSeries:
    """The image series of ``folder`` as the image reader takes it (``dicom_series.find_series``:
    the largest series, proven whole: no missing, doubled or unevenly spaced slice).

    ``files``: these instances instead (found in Slicer's DICOM database); sorted here and checked
    against the label grid by ``check_matches_grid``.
    """
    import pydicom

    folder = Path(folder).expanduser()
    if files is None:
        from ..dicom_series import find_series

        files = [Path(f) for f in find_series(folder, str(folder)).files]
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    if not datasets or any("ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds for ds in datasets):
        raise InputError(
            f"{folder}: the DICOM exports need one image per slice with its position (multi-frame images are not supported)"
        )
    if len({str(ds.SeriesInstanceUID) for ds in datasets}) != 1:
        raise InputError(f"{folder}: the source images belong to more than one series")
    row, col = (np.array([float(v) for v in datasets[0].ImageOrientationPatient])[s] for s in (slice(0, 3), slice(3, 6)))
    normal = np.cross(row, col)
    order = sorted(range(len(datasets)), key=lambda i: float(np.dot(normal, [float(v) for v in datasets[i].ImagePositionPatient])))
    return SourceSeries([datasets[i] for i in order], [Path(files[i]) for i in order])


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

"""Slicer's DICOM database and its scalar-volume loader, as far as a module sees them.

Written from Slicer's DICOMLib/DICOMUtils.py, DICOMLib/DICOMPlugin.py and
DICOMPlugins/DICOMScalarVolumePlugin.py (Slicer main, 2026) and CTK's ctkDICOMDatabase API:

- ``slicer.dicomDatabase`` (:class:`DICOMDatabase`): instances indexed by SOP Instance UID;
  ``insert(file, storeFile)`` either links the file where it is or copies it to
  ``<databaseDirectory>/dicom/<study>/<series>/<instance>`` as ctkDICOMDatabase does;
  ``fileForInstance`` answers "" for an unknown UID; ``fileValue(file, "gggg,eeee")`` reads a tag.
- ``DICOMLib.DICOMUtils.importDicom(folder, database, copyFiles)`` indexes every DICOM file under
  a folder (ctkDICOMIndexer.addDirectory) and returns True, or False after logging an error.
- :func:`load_series` does what the DICOM browser's Load does for a CT/MR series with the
  "Archetype" reader: the files sorted along the slice normal, one
  ``vtkMRMLVolumeArchetypeStorageNode`` reading them all, the node named
  ``"<SeriesNumber>: <SeriesDescription>"``, and the ``DICOM.instanceUIDs`` attribute listing the
  instances in slice order (what Slicer's DICOM export plugins use to find the source files).

Not reproduced: the SQLite schema, thumbnails, tag cache, patient/study tables, the subject
hierarchy items the plugin adds, other plugins (SEG, RT) and the browser's loadable selection.
"""

from __future__ import annotations

import logging
import shutil
import types
from pathlib import Path

import numpy as np


class DICOMDatabase:
    """The calls of ctkDICOMDatabase that Slicer's Python DICOM code makes."""

    def __init__(self, folder: Path):
        self._folder = Path(folder)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, str] = {}  # SOP Instance UID -> file
        self._series: dict[str, str] = {}  # SOP Instance UID -> Series Instance UID

    @property
    def databaseDirectory(self) -> str:  # noqa: N802
        return str(self._folder)

    def isOpen(self) -> bool:  # noqa: N802
        return True

    def insert(self, file_path: str, storeFile: bool = True, generateThumbnail: bool = True) -> None:  # noqa: N803
        import pydicom

        ds = pydicom.dcmread(file_path, stop_before_pixels=True)
        uid = str(ds.SOPInstanceUID)
        path = Path(file_path)
        if storeFile:
            target = self._folder / "dicom" / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID) / uid
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            path = target
        self._files[uid] = str(path.resolve())
        self._series[uid] = str(ds.SeriesInstanceUID)

    def fileForInstance(self, sopInstanceUID: str) -> str:  # noqa: N802, N803
        return self._files.get(sopInstanceUID, "")

    def instanceForFile(self, file_path: str) -> str:  # noqa: N802
        wanted = str(Path(file_path).resolve())
        return next((uid for uid, f in self._files.items() if f == wanted), "")

    def instancesForSeries(self, seriesUID: str) -> list[str]:  # noqa: N802, N803
        return [uid for uid, s in self._series.items() if s == seriesUID]

    def filesForSeries(self, seriesUID: str, hits: int = -1) -> list[str]:  # noqa: N802, N803
        files = [self._files[uid] for uid in self.instancesForSeries(seriesUID)]
        return files if hits < 0 else files[:hits]

    def fileValue(self, file_path: str, tag: str) -> str:  # noqa: N802
        import pydicom

        group, element = (int(x, 16) for x in tag.split(","))
        ds = pydicom.dcmread(file_path, stop_before_pixels=True)
        item = ds.get((group, element))
        if item is None or item.value is None:
            return ""
        return "\\".join(str(v) for v in item.value) if item.VM > 1 else str(item.value)

    def removeSeries(self, seriesUID: str) -> None:  # noqa: N802, N803
        for uid in self.instancesForSeries(seriesUID):
            del self._files[uid], self._series[uid]


def dicomlib_module(database_getter) -> types.ModuleType:
    """``DICOMLib`` with ``DICOMUtils.importDicom``."""
    module = types.ModuleType("DICOMLib")
    utils = types.ModuleType("DICOMLib.DICOMUtils")

    def importDicom(dicomDataDir, dicomDatabase=None, copyFiles=False):  # noqa: N802, N803
        import pydicom

        database = dicomDatabase if dicomDatabase is not None else database_getter()
        try:
            for path in sorted(Path(dicomDataDir).rglob("*")):
                if path.is_file() and _is_dicom(path):
                    database.insert(str(path), bool(copyFiles))
        except (OSError, pydicom.errors.InvalidDicomError):
            logging.exception("Failed to import DICOM folder " + str(dicomDataDir))
            return False
        return True

    utils.importDicom = importDicom
    module.DICOMUtils = utils
    return module


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(132)[128:132] == b"DICM"


def load_series(series_uid: str):
    """Load a scalar-volume series from ``slicer.dicomDatabase`` into ``slicer.mrmlScene``."""
    import slicer

    database = slicer.dicomDatabase
    files = database.filesForSeries(series_uid)
    if not files:
        raise ValueError(f"series {series_uid} is not in the DICOM database")
    files = _sorted_by_position(database, files)
    description = database.fileValue(files[0], "0008,103e") or "Unnamed Series"
    number = database.fileValue(files[0], "0020,0011")
    name = slicer.mrmlScene.GenerateUniqueName(f"{number}: {description}" if number else description)
    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(files[0])
    for f in files:
        storage.AddFileName(f)
    storage.SetSingleFile(0)
    volume.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(volume):
        slicer.mrmlScene.RemoveNode(volume)
        slicer.mrmlScene.RemoveNode(storage)
        raise ValueError(f"series {series_uid} could not be read")
    volume.CreateDefaultDisplayNodes()
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(database.fileValue(f, "0008,0018") or "Unknown" for f in files))
    volume.SetAttribute("DICOM.instanceNumbers", " ".join(database.fileValue(f, "0020,0013") or "?" for f in files))
    return volume


def _sorted_by_position(database: DICOMDatabase, files: list[str]) -> list[str]:
    """Slice order: ImagePositionPatient projected on the normal of ImageOrientationPatient."""

    def numbers(file, tag):
        return np.array([float(v) for v in database.fileValue(file, tag).split("\\")])

    orientation = numbers(files[0], "0020,0037")
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(files, key=lambda f: float(numbers(f, "0020,0032") @ normal))

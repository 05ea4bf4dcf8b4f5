"""Files in and out of the MRML scene through MRML storage nodes (runs on slicer-core).

Volumes are written with ``vtkMRMLVolumeArchetypeStorageNode`` so the geometry written is exactly
the one Slicer shows (IJK-to-RAS, converted to LPS in the file). Reading the result label map
happens in a private scratch scene: nothing reaches the user's scene until the import succeeds.
"""

from __future__ import annotations

from pathlib import Path

import slicer
import vtk


def volume_is_transformed(volume_node) -> bool:
    """True when the volume sits under a transform (its file would not match what is shown)."""
    return volume_node.GetParentTransformNode() is not None


def export_volume(volume_node, path: str | Path) -> Path:
    """Write a scalar volume node to ``path`` (.nrrd) without adding anything to its scene."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise ValueError(f"volume {_name(volume_node)} has no image data")
    if volume_is_transformed(volume_node):
        raise ValueError(
            f"volume {_name(volume_node)} is under a transform; harden the transform first "
            "(Data module, right-click, Harden transform)"
        )
    path = Path(path)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)  # speed over size: the file lives seconds in a temp folder
    if not storage.WriteData(volume_node):
        raise OSError(f"could not write volume {_name(volume_node)} to {path}")
    return path


def read_label_map(path: str | Path):
    """Read a label map file into a ``vtkOrientedImageData`` (geometry in RAS)."""
    scratch = slicer.vtkMRMLScene()
    node = scratch.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not Path(path).is_file() or not storage.ReadData(node):
        raise OSError(f"could not read the label map {path}")
    image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(node)
    scratch.Clear(1)
    return image


def ijk_to_ras(volume_node) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return matrix


def _name(node) -> str:
    return repr(node.GetName()) if node is not None else "(none)"

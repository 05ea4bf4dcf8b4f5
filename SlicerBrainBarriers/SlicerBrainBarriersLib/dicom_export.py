"""Export to DICOM: the segmentation node as it is now (edits included) as SEG and/or RTSTRUCT.

Runs on slicer-core (no Qt). The reference volume must have come from Slicer's DICOM database:
its ``DICOM.instanceUIDs`` attribute (set by Slicer's DICOM volume loader) names the source
instances, whose files the database knows. The segments are rasterised on the reference volume's
grid and written by the core's writers (``brainbarriers.dicom``), the same code as the command
line's ``--dicom-seg``/``--rtstruct``. Segments whose voxels differ from what the model wrote are
marked SEMIAUTOMATIC. Only the module's own segments (IDs ``BrainBarriers_<key>``) are exported:
they carry the structure table's codes; where segments overlap, the later structure of the table
wins (both objects are written from one label map).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import slicer
import vtk
from brainbarriers.structures import OUTPUT_LABELS

from . import scene_io, segments

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
#: What the export needs in Slicer's Python (pyproject's ``dicom`` extra less pynetdicom, which only
#: the command line's node uses); check/install them with ``dependencies.check``/``install``.
DICOM_REQUIREMENTS = ("pydicom>=3.0", "highdicom>=0.25")


class DicomExportError(ValueError):
    """The export cannot be done; the message is one line for the user."""


def instance_uids(volume_node) -> list[str]:
    """SOP Instance UIDs of the volume's source images (empty when it did not come from DICOM)."""
    text = volume_node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) if volume_node is not None else None
    return text.split() if text else []


def from_dicom_database(volume_node) -> bool:
    """True when the volume was loaded from Slicer's DICOM database (the export is possible)."""
    return bool(instance_uids(volume_node))


def choose_export(inputs: dict, output_node, last_result) -> tuple:
    """What the panel's Export to DICOM would write: ``(segmentation, reference, why_not)``.

    The reference is the pipeline's: CT, else T1, else T2 (``inputs``: modality -> node or None).
    The segmentation is ``output_node``, else the last run's result (``(node, reference)``) when it
    was made from this reference and is still in its scene. ``why_not`` is None when the export is
    possible, else one line for the user.
    """
    reference = next((inputs[m] for m in ("ct", "t1", "t2") if inputs.get(m) is not None), None)
    segmentation = output_node
    if segmentation is None and last_result is not None:
        node, result_reference = last_result
        if result_reference is reference and reference is not None and node.GetScene() is reference.GetScene():
            segmentation = node
    if segmentation is None:
        return None, reference, "Segment first, or select a segmentation as Output."
    if not from_dicom_database(reference):
        return segmentation, reference, "The reference volume (CT, else T1, else T2) was not loaded from the DICOM database."
    return segmentation, reference, None


def source_files(volume_node, database=None) -> list[Path]:
    """The files of the volume's source instances, found in the DICOM database."""
    uids = instance_uids(volume_node)
    if not uids:
        raise DicomExportError(f"{volume_node.GetName() if volume_node else 'no volume'} was not loaded from the DICOM database")
    database = database if database is not None else getattr(slicer, "dicomDatabase", None)
    if database is None:
        raise DicomExportError("Slicer's DICOM database is not open")
    files = [database.fileForInstance(uid) for uid in uids]
    missing = sum(not f for f in files)
    if missing:
        raise DicomExportError(f"{missing} of {len(uids)} source images are no longer in the DICOM database")
    return [Path(f) for f in files]


def case_name(segmentation_node) -> str:
    """The default file name stem: the segmentation node's name, made file-safe."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", segmentation_node.GetName()).strip("._-") or "brainbarriers"


def output_paths(segmentation_node, output_dir: str | Path, seg: bool = True, rtstruct: bool = True,
                 case: str | None = None) -> dict[str, Path]:
    """The files :func:`export_to_dicom` would write (so a caller can ask before replacing them)."""
    from brainbarriers.dicom.outputs import dicom_paths

    return dicom_paths(output_dir, case or case_name(segmentation_node), seg, rtstruct)


def exported_labels(segmentation_node) -> list:
    """The output labels whose segments (``BrainBarriers_<key>``) are in the node, in table order."""
    segmentation = segmentation_node.GetSegmentation()
    return [lab for lab in OUTPUT_LABELS if segmentation.GetSegment(lab.segment_id) is not None]


def label_image(segmentation_node, reference_node, labels: list):
    """The segments as one SimpleITK label image (ABCs values) on the reference volume's grid."""
    import SimpleITK as sitk

    ids = vtk.vtkStringArray()
    for lab in labels:
        ids.InsertNextValue(lab.segment_id)
    scratch = slicer.vtkMRMLScene()
    labelmap = scratch.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    segments.ensure_converter_rules(segmentation_node.GetScene())
    if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_node):
        raise DicomExportError("could not rasterise the segments on the reference volume's grid")
    with tempfile.TemporaryDirectory(prefix="brainbarriers-dicom-") as tmp:
        path = scene_io.export_volume(labelmap, Path(tmp) / "labels.nrrd")
        image = sitk.ReadImage(str(path))
    scratch.Clear(1)
    # ExportSegmentsToLabelmapNode numbers the segments 1..n in the order given: map to table values.
    lookup = [0] + [lab.value for lab in labels]
    array = sitk.GetArrayFromImage(image)
    import numpy as np

    out = sitk.GetImageFromArray(np.asarray(lookup, np.uint8)[array])
    out.CopyInformation(image)
    return out


def edited_values(segmentation_node, labels: list) -> frozenset[int]:
    """Label values whose segments a person changed after the model wrote them (or made by hand)."""
    return frozenset(lab.value for lab in labels if not segments.is_unedited(segmentation_node, lab.segment_id))


def algorithm_info(segmentation_node, labels: list):
    """Model id, version and manifest SHA-256 from the segments' model tag and the installed bundle."""
    from brainbarriers.dicom.common import AlgorithmInfo

    segmentation = segmentation_node.GetSegmentation()
    tag = next((segments.get_tag(segmentation.GetSegment(lab.segment_id), segments.MODEL_TAG) for lab in labels), None)
    model_id, _, version = (tag or "unknown@").partition("@")
    sha256 = "unknown"
    try:
        from brainbarriers.bundles import load_bundle

        bundle = load_bundle(tag, verify=False)
        model_id, version, sha256 = bundle.id, bundle.version, bundle.sha256
    except Exception:  # noqa: BLE001 - the bundle may be gone; the export still names the model
        pass
    return AlgorithmInfo(model_id, version or "unknown", sha256)


def export_to_dicom(
    segmentation_node,
    reference_node,
    output_dir: str | Path,
    seg: bool = True,
    rtstruct: bool = True,
    case: str | None = None,
    files: list[Path] | None = None,
    database=None,
    add_to_database: bool = False,
    overwrite: bool = False,
) -> dict[str, str]:
    """Write ``<case>_seg.dcm`` and/or ``<case>_rtstruct.dcm`` for the node's current segments.

    Args:
        segmentation_node: the result (edited or not).
        reference_node: the volume it was segmented on, loaded from the DICOM database.
        output_dir: folder for the objects (never the source folder).
        seg, rtstruct: which objects to write.
        case: file name stem (default: the segmentation node's name, made file-safe).
        files: the source instances' files (default: looked up in ``database``).
        database: a ctkDICOMDatabase (default: ``slicer.dicomDatabase``).
        add_to_database: also import the written objects into the DICOM database.
        overwrite: replace existing objects of the same names.

    Returns: {"dicom_seg": path, "rtstruct": path} of what was written.
    """
    from brainbarriers.dicom.outputs import export_labels
    from brainbarriers.dicom.series import load_source_series
    from brainbarriers.errors import BrainBarriersError

    labels = exported_labels(segmentation_node)
    if not labels:
        raise DicomExportError("the segmentation has no Brain Barriers segments to export")
    if files is None:
        files = source_files(reference_node, database)
    case = case or case_name(segmentation_node)
    out = Path(output_dir)
    sources = {Path(f).resolve().parent for f in files}
    if any(out.resolve() == s or s in out.resolve().parents for s in sources):
        raise DicomExportError(f"{out} holds the source images; choose another folder")
    try:
        series = load_source_series(Path(files[0]).parent, files=files)
        image = label_image(segmentation_node, reference_node, labels)
        written = export_labels(series, image, [lab.value for lab in labels], out, case, seg, rtstruct,
                                algorithm_info(segmentation_node, labels), edited_values(segmentation_node, labels),
                                overwrite)
    except BrainBarriersError as exc:
        raise DicomExportError(str(exc)) from None
    if add_to_database:
        add_files_to_database(list(written.values()), database)
    return written


def add_files_to_database(paths: list[str], database=None) -> None:
    """Import written objects into Slicer's DICOM database (copied into it, like Slicer's importer)."""
    from DICOMLib import DICOMUtils  # Slicer application only

    database = database if database is not None else slicer.dicomDatabase
    with tempfile.TemporaryDirectory(prefix="brainbarriers-dicom-import-") as tmp:
        import shutil

        for p in paths:
            shutil.copy2(p, tmp)
        DICOMUtils.importDicom(tmp, database, True)  # copyFiles: the temporary folder goes away

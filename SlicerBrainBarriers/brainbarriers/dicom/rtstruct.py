"""DICOM RT Structure Set (RTSTRUCT) of a result, written with pydicom.

One ROI per output label (name, colour, RT ROI interpreted type ORGAN, generation algorithm
AUTOMATIC, or SEMIAUTOMATIC for structures a person edited, the structure table's code in RT ROI
Identification Code Sequence), one CLOSED_PLANAR
contour per 4-connected region per slice, each referencing its slice's SOP Instance UID. Contours
follow the voxel boundaries (``contours.keyhole_polygons``), so filling them gives back the labels
exactly; holes are joined to their outer contour by zero-width keyhole cuts, so readers that
union a slice's contours and readers that use the even-odd rule both keep them. A structure the
result does not contain is listed with no contours.

rt-utils was not used: it draws contours through voxel centres (OpenCV), which loses half a voxel
all round.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..structures import PRIVATE_SCHEME, output_label
from .common import MANUFACTURER, AlgorithmInfo, copy_patient_study, new_uid, now
from .contours import keyhole_polygons
from .series import SourceSeries, check_matches_grid, label_array

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: Referenced SOP Class of the RT Referenced Study Sequence item: Detached Study Management (retired),
#: which the standard allows there and planning systems write and expect.
STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
SERIES_NUMBER = 9902
ROI_INTERPRETED_TYPE = "ORGAN"


def _code_item(scheme: str, value: str, meaning: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _image_ref(ds):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def _slice_contours(series: SourceSeries, k: int, mask: np.ndarray) -> list[list[float]]:
    """Patient-coordinate (LPS mm) points of every contour of slice ``k``."""
    ds = series.datasets[k]
    row_dir, col_dir, _ = series.orientation()
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    origin = np.array([float(v) for v in ds.ImagePositionPatient])
    out = []
    for loop in keyhole_polygons(mask):
        # Corner (x, y) lies half a pixel before pixel centre (x, y): column index x - 0.5, row y - 0.5.
        i = loop[:, 0] - 0.5
        j = loop[:, 1] - 0.5
        points = origin + np.outer(i * col_spacing, row_dir) + np.outer(j * row_spacing, col_dir)
        out.append(points.ravel().tolist())
    return out


def _ds(value: float) -> str:
    """A DS value (16 characters at most) with 0.1 micrometre resolution."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def build_rtstruct(series: SourceSeries, labels: sitk.Image, values: list[int], algorithm: AlgorithmInfo,
                   edited: frozenset[int] = frozenset()):
    """The RTSTRUCT dataset (pydicom Dataset) for ``labels`` on ``series``' grid.

    ``edited``: label values a person changed after the model made them (SEMIAUTOMATIC ROIs).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    check_matches_grid(series, labels)
    arr = label_array(labels)
    src = series.first
    date, time = now()
    sop_uid = new_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta

    # SOP Common, Patient, General Study
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    copy_patient_study(src, ds)
    # RT Series
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = f"Brain barriers RTSTRUCT ({algorithm.description()})"[:64]
    ds.OperatorsName = ""
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = algorithm.name
    ds.DeviceSerialNumber = algorithm.serial_number()
    ds.SoftwareVersions = algorithm.software_version
    # Structure Set
    ds.StructureSetLabel = "BrainBarriers"
    ds.StructureSetName = algorithm.model_id[:64]
    ds.StructureSetDescription = f"Automatic contours by {algorithm.description()} sha256 {algorithm.model_sha256}"[:1024]
    ds.StructureSetDate, ds.StructureSetTime = date, time
    ds.InstanceNumber = 1

    frame_uid = src.FrameOfReferenceUID
    # Frame of Reference module: the contours are in the source images' frame.
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = src.PositionReferenceIndicator if "PositionReferenceIndicator" in src else ""
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = src.SeriesInstanceUID
    series_ref.ContourImageSequence = Sequence([_image_ref(d) for d in series.datasets])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = STUDY_SOP_CLASS
    study_ref.ReferencedSOPInstanceUID = src.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = frame_uid
    frame_ref.RTReferencedStudySequence = Sequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_ref])

    rois, roi_contours, observations = [], [], []
    for number, value in enumerate(values, start=1):
        lab = output_label(value)
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = lab.name
        roi.ROIDescription = lab.code.meaning
        roi.ROIGenerationAlgorithm = "SEMIAUTOMATIC" if value in edited else "AUTOMATIC"
        roi.ROIGenerationDescription = algorithm.description()
        rois.append(roi)

        contour_items = []
        for k in np.nonzero((arr == value).any(axis=(1, 2)))[0].tolist():
            for points in _slice_contours(series, k, arr[k] == value):
                item = Dataset()
                item.ContourImageSequence = Sequence([_image_ref(series.datasets[k])])
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(points) // 3
                item.ContourNumber = len(contour_items) + 1
                item.ContourData = [_ds(v) for v in points]
                contour_items.append(item)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(lab.color)
        roi_contour.ReferencedROINumber = number
        if contour_items:
            roi_contour.ContourSequence = Sequence(contour_items)
        roi_contours.append(roi_contour)

        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.ROIObservationLabel = lab.key
        obs.RTROIInterpretedType = ROI_INTERPRETED_TYPE
        obs.ROIInterpreter = ""
        obs.RTROIIdentificationCodeSequence = Sequence([_code_item(lab.code.scheme, lab.code.value, lab.code.meaning)])
        observations.append(obs)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(roi_contours)
    ds.RTROIObservationsSequence = Sequence(observations)

    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "SlicerBrainBarriers private structure codes"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    ds.CodingSchemeIdentificationSequence = Sequence([scheme])
    return ds


def write_rtstruct(path: str | Path, series: SourceSeries, labels: sitk.Image, values: list[int],
                   algorithm: AlgorithmInfo, edited: frozenset[int] = frozenset()) -> None:
    build_rtstruct(series, labels, values, algorithm, edited).save_as(str(path), enforce_file_format=True)

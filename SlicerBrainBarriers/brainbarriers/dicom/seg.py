"""DICOM Segmentation (SEG) of a result, written with highdicom.

Encoding: BINARY (one bit per voxel, one frame per source slice and segment that holds the
segment; empty frames omitted). LABELMAP SEG is newer (2024) and few planning systems or
validators read it yet; binary SEG is what they all do. One segment per output label, with the
structure table's name, code and colour, AUTOMATIC algorithm type and the model's identification
(id, version, SHA-256 of its manifest). Structures the result does not contain get no segment
(a segment must have at least one frame); the RTSTRUCT still lists them, empty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..structures import _CATEGORY, PRIVATE_SCHEME, output_label
from .common import MANUFACTURER, PATIENT_STUDY_TYPE2, AlgorithmInfo, copy_patient_study, new_uid
from .series import SourceSeries, check_matches_grid, label_array

SERIES_NUMBER = 9901


def _code(scheme: str, value: str, meaning: str):
    from pydicom.sr.coding import Code

    return Code(value=value, scheme_designator=scheme, meaning=meaning)


def _with_type2(datasets: list) -> list:
    """Copies of the source headers with missing Type 2 patient/study attributes present and empty
    (highdicom reads them unconditionally)."""
    import copy

    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        for keyword in PATIENT_STUDY_TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
        out.append(ds)
    return out


def build_seg(series: SourceSeries, labels: sitk.Image, values: list[int], algorithm: AlgorithmInfo,
              edited: frozenset[int] = frozenset(), series_description: str | None = None):
    """The SEG dataset (a highdicom Segmentation) for ``labels`` on ``series``' grid.

    ``edited``: label values a person changed after the model made them (SEMIAUTOMATIC segments).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    check_matches_grid(series, labels)
    arr = label_array(labels)
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=f"{algorithm.model_version} (brainbarriers {algorithm.software_version})"[:64],
        source=MANUFACTURER,
        parameters={"model_id": algorithm.model_id, "model_sha256": algorithm.model_sha256},
    )
    present = [v for v in values if (arr == v).any()]
    descriptions = []
    # The label map relabelled to segment numbers: one byte per voxel in all (highdicom splits it
    # into binary frames), not one volume per segment.
    lut = np.zeros(256, np.uint8)
    for number, value in enumerate(present, start=1):
        lab = output_label(value)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=lab.name,
            segmented_property_category=_code(*_CATEGORY),
            segmented_property_type=_code(lab.code.scheme, lab.code.value, lab.code.meaning),
            algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if value in edited
                            else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC),
            algorithm_identification=identification,
            tracking_uid=new_uid(),
            tracking_id=lab.segment_id,
            display_color=hd.color.CIELabColor.from_rgb(*lab.color),
        ))
        lut[value] = number
    if not descriptions:
        from ..errors import OutputError

        raise OutputError("the result holds no structure; a DICOM SEG needs at least one segment")
    pixel_array = lut[arr]
    seg = hd.seg.Segmentation(
        source_images=_with_type2(series.datasets),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=new_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.software_version,
        device_serial_number=algorithm.serial_number(),
        coding_schemes=[hd.coding_schemes.CodingSchemeIdentificationItem(
            designator=PRIVATE_SCHEME, name="SlicerBrainBarriers private structure codes",
            responsible_organization=MANUFACTURER,
        )],
        content_label="BRAINBARRIERS",
        content_description=algorithm.description(),
        content_creator_name=None,
        series_description=series_description or f"Brain barriers SEG ({algorithm.description()})"[:64],
    )
    # highdicom copies the patient/study modules but drops Type 2 attributes the source lacks.
    copy_patient_study(series.first, seg)
    return seg


def write_seg(path: str | Path, series: SourceSeries, labels: sitk.Image, values: list[int],
              algorithm: AlgorithmInfo, edited: frozenset[int] = frozenset()) -> None:
    build_seg(series, labels, values, algorithm, edited).save_as(str(path))

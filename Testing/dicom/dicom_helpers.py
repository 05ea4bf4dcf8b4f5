"""Build real DICOM image series (CT, MR) from the bundled sample with pydicom, and compare masks.

Some Type 2 attributes (PatientBirthDate, ReferringPhysicianName, AccessionNumber) are left out
on purpose: the exports must write them empty, not drop them.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "SampleData"
DEMO_MODEL = REPO / "SlicerBrainBarriers" / "brainbarriers" / "models" / "brainbarriers-demo"


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m brainbarriers ARGS`` in a subprocess, one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "brainbarriers", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2, one line on stderr containing every needle, no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


def write_series(image: sitk.Image, folder: Path, modality: str, study_uid: str, frame_uid: str,
                 description: str, series_number: int, patient_id: str = "BB-TEST-1") -> list[str]:
    """Write ``image`` as one DICOM file per slice; returns the SOP Instance UIDs in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    arr = sitk.GetArrayFromImage(image)
    if modality == "CT":
        arr = np.clip(arr, -1024, 3071).astype(np.int16)
        sop_class, signed = CTImageStorage, 1
    else:
        arr = np.clip(arr, 0, 4095).astype(np.uint16)
        sop_class, signed = MRImageStorage, 0
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    series_uid = generate_uid()
    today = datetime.date(2026, 1, 2).strftime("%Y%m%d")
    uids = []
    for k in range(arr.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = "Test^Brain"
        ds.PatientID = patient_id
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = today
        ds.StudyTime = "101010"
        ds.StudyID = "1"
        ds.StudyDescription = "brain barriers test"
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.Manufacturer = "test"
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = arr.shape[1], arr.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = signed
        if modality == "CT":
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
            ds.KVP = "120"
            ds.AcquisitionNumber = 1
        else:
            ds.ScanningSequence = "GR"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D"
            ds.EchoTime = "4"
            ds.EchoTrainLength = "1"
            ds.RepetitionTime = "2000"
            ds.MagneticFieldStrength = "3"
        ds.PixelData = arr[k].tobytes()
        ds.save_as(folder / f"{modality}{k:04d}.dcm", enforce_file_format=True)
        uids.append(str(ds.SOPInstanceUID))
    return uids


def sample_image(modality: str, shrink: int = 1) -> sitk.Image:
    image = sitk.ReadImage(str(SAMPLE / f"sample_{modality}.nrrd"))
    if shrink > 1:
        image = sitk.Shrink(image, [shrink] * 3)
    if modality != "ct":
        # The MR templates are 8-bit; stretch them to a plausible MR range.
        image = sitk.Cast(image, sitk.sitkFloat32) * 10.0
    return image


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total

"""What the SEG and RTSTRUCT writers share: who made the result, new UIDs, the copied patient/study data."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from .. import __version__

MANUFACTURER = "SlicerBrainBarriers"
#: Patient and General Study module attributes (Type 1 and 2) copied from the source image; the
#: Type 2 ones missing there are written empty, as the standard requires.
PATIENT_STUDY_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
PATIENT_STUDY_OPTIONAL = ("IssuerOfPatientID", "PatientAge", "PatientSize", "PatientWeight", "StudyDescription")


@dataclass(frozen=True)
class AlgorithmInfo:
    """The model that produced the labels (written into both objects)."""

    model_id: str
    model_version: str
    model_sha256: str
    software_version: str = __version__

    @classmethod
    def from_bundle(cls, bundle) -> AlgorithmInfo:
        return cls(bundle.id, bundle.version, bundle.sha256)

    @property
    def name(self) -> str:
        return f"BrainBarriers HMRNet {self.model_id}"[:64]

    def serial_number(self) -> str:
        """Type 1 Device Serial Number of software: the model and its manifest hash prefix."""
        return f"{self.model_id}@{self.model_version}-{self.model_sha256[:12]}"[:64]

    def description(self) -> str:
        """Short text for LO attributes (64 characters at most)."""
        return f"HMRNet {self.model_id}@{self.model_version}"[:64]


def new_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


def now() -> tuple[str, str]:
    t = _dt.datetime.now()
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S")


def copy_patient_study(source, target) -> None:
    """Copy the Patient and General Study modules; missing Type 2 attributes become empty."""
    target.StudyInstanceUID = source.StudyInstanceUID
    for keyword in PATIENT_STUDY_TYPE2:
        setattr(target, keyword, getattr(source, keyword, None) if keyword in source else "")
    for keyword in PATIENT_STUDY_OPTIONAL:
        if keyword in source:
            setattr(target, keyword, source[keyword].value)
    if "SpecificCharacterSet" in source:
        target.SpecificCharacterSet = source.SpecificCharacterSet

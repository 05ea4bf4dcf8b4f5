"""Fixtures of the DICOM tests: CT and MR series built from the bundled sample, one demo-model run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from dicom_helpers import DEMO_MODEL, run_cli, sample_image, write_series  # noqa: E402


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> dict:
    """A CT and a T1 series of one study and frame of reference (the sample's 1.2 mm grid)."""
    from pydicom.uid import generate_uid

    root = tmp_path_factory.mktemp("study")
    study_uid, frame_uid = generate_uid(), generate_uid()
    ct_uids = write_series(sample_image("ct"), root / "ct", "CT", study_uid, frame_uid, "CT head 1.2mm", 2)
    mr_uids = write_series(sample_image("t1"), root / "t1", "MR", study_uid, frame_uid, "T1 MPRAGE", 3)
    return {"root": root, "ct": root / "ct", "t1": root / "t1", "study_uid": study_uid, "frame_uid": frame_uid,
            "ct_uids": ct_uids, "mr_uids": mr_uids}


@pytest.fixture(scope="session")
def demo_run(study, tmp_path_factory) -> dict:
    """``brainbarriers segment --ct <DICOM folder> --dicom-seg --rtstruct`` with the demo model."""
    out = tmp_path_factory.mktemp("demo_out")
    proc = run_cli("segment", "--ct", str(study["ct"]), "--model", str(DEMO_MODEL), "--output", str(out),
                   "--case", "head", "--dicom-seg", "--rtstruct", "--threads", "1", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    return {"out": out, "seg": out / "head_seg.dcm", "rtstruct": out / "head_rtstruct.dcm",
            "labels": out / "head_labels.nii.gz", "stdout": proc.stdout}

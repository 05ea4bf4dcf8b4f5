"""SEG and RTSTRUCT exports checked by independent readers: dciodvfy, plastimatch, highdicom, pydicom."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from brainbarriers.dicom.common import AlgorithmInfo
from brainbarriers.dicom.rtstruct import write_rtstruct
from brainbarriers.dicom.seg import write_seg
from brainbarriers.dicom.series import load_source_series
from brainbarriers.structures import OUTPUT_LABELS
from dicom_helpers import DEMO_MODEL, SAMPLE, assert_one_line_error, dice, run_cli, sample_image, write_series

MIN_DICE = {"cerebellum": 0.95, "ventricles": 0.95, "falx": 0.85, "sinuses": 0.85, "tentorium": 0.85}
TYPE2_MISSING_IN_SOURCE = ("PatientBirthDate", "ReferringPhysicianName", "AccessionNumber")

needs_tools = pytest.mark.skipif(not (shutil.which("dciodvfy") and shutil.which("plastimatch")),
                                 reason="dicom3tools/plastimatch missing: run scripts/install_system_libs.sh")


def dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def plastimatch_masks(rtstruct: Path, reference: Path, out: Path) -> dict[str, np.ndarray]:
    proc = subprocess.run(["plastimatch", "convert", "--input", str(rtstruct), "--referenced-ct", str(reference),
                           "--output-prefix", str(out), "--prefix-format", "nrrd"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {p.stem: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) > 0 for p in out.glob("*.nrrd")}


def folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def check_objects(seg_path: Path, rt_path: Path, series_dir: Path, labels: np.ndarray, source_uids: list[str],
                  tmp: Path, algorithm_sha256: str) -> dict[str, float]:
    """Everything the issue asks of one SEG + RTSTRUCT pair; returns plastimatch Dice per structure."""
    import highdicom as hd

    source = pydicom.dcmread(next(series_dir.iterdir()), stop_before_pixels=True)
    assert dciodvfy_errors(seg_path) == []
    assert dciodvfy_errors(rt_path) == []

    # SEG: voxel-exact through highdicom, coded and coloured from the structure table.
    seg = hd.seg.segread(str(seg_path))
    assert seg.SegmentationType == "BINARY"
    by_name = {d.SegmentLabel: d for d in seg.SegmentSequence}
    present = [lab for lab in OUTPUT_LABELS if (labels == lab.value).any()]
    assert sorted(by_name) == sorted(lab.name for lab in present)
    pixels = seg.get_pixels_by_source_instance(source_uids, segment_numbers=None)
    for lab in present:
        d = by_name[lab.name]
        assert d.SegmentedPropertyTypeCodeSequence[0].CodeValue == lab.code.value
        assert d.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == lab.code.scheme
        assert d.SegmentAlgorithmType == "AUTOMATIC"
        rgb = hd.color.CIELabColor.from_dicom_value(d.RecommendedDisplayCIELabValue).to_rgb()
        assert np.allclose(rgb, lab.color, atol=2)
        algo = d.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm_sha256 in algo.AlgorithmParameters
        assert "brainbarriers-demo" in algo.AlgorithmName or "tiny" in algo.AlgorithmName
        assert np.array_equal(pixels[..., d.SegmentNumber - 1].astype(bool), labels == lab.value), lab.name
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID and seg.SOPInstanceUID not in source_uids
    ref_series = seg.ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == source.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in ref_series.ReferencedInstanceSequence} <= set(source_uids)

    # RTSTRUCT: ROIs, references per contour, AUTOMATIC, ORGAN.
    rt = pydicom.dcmread(rt_path)
    assert rt.Modality == "RTSTRUCT" and rt.StudyInstanceUID == source.StudyInstanceUID
    assert rt.SeriesInstanceUID != source.SeriesInstanceUID and rt.SOPInstanceUID != seg.SOPInstanceUID
    assert [r.ROIName for r in rt.StructureSetROISequence] == [lab.name for lab in OUTPUT_LABELS]
    assert {r.ROIGenerationAlgorithm for r in rt.StructureSetROISequence} == {"AUTOMATIC"}
    assert {o.RTROIInterpretedType for o in rt.RTROIObservationsSequence} == {"ORGAN"}
    z_of = {}
    for p in sorted(series_dir.iterdir()):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        z_of[str(ds.SOPInstanceUID)] = float(ds.ImagePositionPatient[2])
    for lab, roi in zip(OUTPUT_LABELS, rt.ROIContourSequence):
        assert list(roi.ROIDisplayColor) == list(lab.color)
        for contour in roi.get("ContourSequence", []):
            uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
            zs = np.array(contour.ContourData[2::3], dtype=float)
            assert np.allclose(zs, z_of[uid], atol=1e-3)
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
    frame = rt.ReferencedFrameOfReferenceSequence[0]
    images = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].ContourImageSequence
    assert [i.ReferencedSOPInstanceUID for i in images] == source_uids

    for ds in (seg, rt):
        for keyword in TYPE2_MISSING_IN_SOURCE:
            assert keyword in ds and ds[keyword].value in ("", None), keyword
        assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName

    # plastimatch turns the contours back into label maps.
    masks = plastimatch_masks(rt_path, series_dir, tmp)
    result = {}
    for lab in OUTPUT_LABELS:
        result[lab.key] = dice(masks[lab.name], labels == lab.value)
    return result


@needs_tools
def test_ct_export_with_the_demo_model(study, demo_run, tmp_path):
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(demo_run["labels"])))
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 5}
    scores = check_objects(demo_run["seg"], demo_run["rtstruct"], study["ct"], labels, study["ct_uids"], tmp_path,
                           json.loads(Path(demo_run["out"] / "head_report.json").read_text())["model"]["sha256"])
    print("plastimatch Dice (CT):", {k: round(v, 4) for k, v in scores.items()})
    for key, minimum in MIN_DICE.items():
        assert scores[key] >= minimum, (key, scores[key])


@needs_tools
def test_mr_export(study, demo_run, tmp_path):
    """The same labels exported against the T1 series (same grid and frame of reference)."""
    labels_image = sitk.ReadImage(str(demo_run["labels"]))
    series = load_source_series(study["t1"])
    algorithm = AlgorithmInfo("brainbarriers-demo", "0.1.0", "0" * 64)
    seg_path, rt_path = tmp_path / "mr_seg.dcm", tmp_path / "mr_rtstruct.dcm"
    write_seg(seg_path, series, labels_image, [1, 2, 3, 4, 5], algorithm)
    write_rtstruct(rt_path, series, labels_image, [1, 2, 3, 4, 5], algorithm)
    labels = sitk.GetArrayFromImage(labels_image)
    scores = check_objects(seg_path, rt_path, study["t1"], labels, study["mr_uids"], tmp_path / "pl", "0" * 64)
    for key, minimum in MIN_DICE.items():
        assert scores[key] >= minimum, (key, scores[key])


@needs_tools
def test_holes_and_thin_sheets_survive_plastimatch(tmp_path):
    """A ring (hole), a 1-voxel sheet and diagonal-only contacts come back exactly."""
    from pydicom.uid import generate_uid

    size = (24, 20, 6)
    image = sitk.Image(size, sitk.sitkInt16)
    image.SetSpacing((0.9, 1.1, 2.0))
    image.SetOrigin((-10.0, 5.0, 30.0))
    image = image + 40
    uids = write_series(image, tmp_path / "ct", "CT", generate_uid(), generate_uid(), "small", 1)
    labels = np.zeros(size[::-1], np.uint8)
    labels[1:5, 3:15, 3:15] = 1
    labels[1:5, 6:11, 6:10] = 0            # the hole
    labels[2:4, 7:9, 7:8] = 1              # an island inside the hole
    labels[:, 2:18, 19] = 2                # one-voxel sheet
    for i in range(5):
        labels[3, 15 + i, 15 + i] = 5      # touching only at corners
    lab_image = sitk.GetImageFromArray(labels)
    lab_image.CopyInformation(image)
    series = load_source_series(tmp_path / "ct")
    rt_path = tmp_path / "rt.dcm"
    write_rtstruct(rt_path, series, lab_image, [1, 2, 5], AlgorithmInfo("t", "1", "0" * 64))
    assert dciodvfy_errors(rt_path) == []
    masks = plastimatch_masks(rt_path, tmp_path / "ct", tmp_path / "pl")
    for value, name in ((1, "Cerebellum"), (2, "Falx cerebri"), (5, "Ventricles")):
        assert np.array_equal(masks[name], labels == value), name
    assert uids == [str(ds.SOPInstanceUID) for ds in series.datasets]


def test_non_dicom_reference_is_a_one_line_error(tmp_path):
    sample = SAMPLE / "sample_ct.nrrd"
    proc = run_cli("segment", "--ct", str(sample), "--output", str(tmp_path / "o"), "--rtstruct")
    assert proc.returncode == 2
    assert_one_line_error(proc, "DICOM series", "sample_ct.nrrd")
    assert not (tmp_path / "o").exists()


def test_output_inside_the_source_folder_is_refused(study):
    before = folder_digest(study["ct"])
    proc = run_cli("segment", "--ct", str(study["ct"]), "--output", str(study["ct"] / "out"), "--dicom-seg")
    assert proc.returncode == 2
    assert_one_line_error(proc, "inside the source DICOM folder")
    assert folder_digest(study["ct"]) == before


def test_source_folder_untouched_and_outputs_listed(study, demo_run):
    names = sorted(p.name for p in demo_run["out"].iterdir())
    assert names == ["head.seg.nrrd", "head_labels.nii.gz", "head_report.json", "head_rtstruct.dcm", "head_seg.dcm"]
    assert all(p.suffix == ".dcm" for p in study["ct"].iterdir())
    assert len(list(study["ct"].iterdir())) == len(study["ct_uids"])
    assert "head_rtstruct.dcm" in demo_run["stdout"]


def test_batch_with_dicom_outputs(tmp_path):
    """segment-batch from a CSV whose reference is a DICOM folder; a non-DICOM case stops the batch first."""
    from pydicom.uid import generate_uid

    write_series(sample_image("ct", shrink=2), tmp_path / "ct", "CT", generate_uid(), generate_uid(), "CT", 2)
    csv = tmp_path / "cases.csv"
    csv.write_text("case,ct\nhead,ct\n")
    out = tmp_path / "out"
    proc = run_cli("segment-batch", "--input", str(csv), "--model", str(DEMO_MODEL), "--output", str(out),
                   "--dicom-seg", "--rtstruct", "--threads", "1", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert (out / "head_seg.dcm").is_file() and (out / "head_rtstruct.dcm").is_file()
    assert pydicom.dcmread(out / "head_rtstruct.dcm").Modality == "RTSTRUCT"

    csv.write_text(f"case,ct\nhead,ct\nother,{SAMPLE / 'sample_ct.nrrd'}\n")
    proc = run_cli("segment-batch", "--input", str(csv), "--model", str(DEMO_MODEL), "--output", str(tmp_path / "o2"),
                   "--rtstruct")
    assert_one_line_error(proc, "DICOM series", "sample_ct.nrrd")
    assert not (tmp_path / "o2").exists()


def test_series_with_a_missing_slice_is_refused(tmp_path):
    from pydicom.uid import generate_uid

    files = write_series(sample_image("ct", shrink=8), tmp_path / "ct", "CT", generate_uid(), generate_uid(), "CT", 2)
    assert len(files) > 10
    victim = sorted((tmp_path / "ct").iterdir())[5]
    victim.unlink()
    before = folder_digest(tmp_path / "ct")
    proc = run_cli("segment", "--ct", str(tmp_path / "ct"), "--output", str(tmp_path / "out"), "--rtstruct")
    assert_one_line_error(proc, "slice(s) missing between DICOM files CT0004.dcm and CT0006.dcm")
    assert not (tmp_path / "out").exists() and folder_digest(tmp_path / "ct") == before

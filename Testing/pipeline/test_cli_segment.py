"""End to end through ``python -m brainbarriers`` with a tiny random bundle (the Slicer module's contract)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import SimpleITK as sitk
import slicerio
from brainbarriers.structures import OUTPUT_LABELS
from phantom import write_case
from pipeline_helpers import CASE_GRID, assert_one_line_error, run_cli


def _segment(case_files, bundle, out, *extra, env=None):
    return run_cli("segment", "--ct", str(case_files["ct"]), "--t1", str(case_files["t1"]), "--t2",
                   str(case_files["t2"]), "--model", str(bundle), "--output", str(out), *extra, env=env)


def test_segment_json_progress_and_outputs(case_files, tiny_bundle, tmp_path):
    out = tmp_path / "out"
    proc = _segment(case_files, tiny_bundle, out, "--progress", "json", "--overview", "--challenge-format",
                    "--case", "c1")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all({"stage", "fraction", "message"} <= set(obj) for obj in lines)
    fractions = [obj["fraction"] for obj in lines]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] == 1.0
    assert {"load", "prepare", "coarse", "fine", "export"} <= {obj["stage"] for obj in lines}
    done = lines[-1]
    assert done["stage"] == "done"
    expected = {"seg": "c1.seg.nrrd", "labels": "c1_labels.nii.gz", "report": "c1_report.json",
                "overview": "c1_overview.png", "challenge": "c1_task1.mha"}
    assert {k: os.path.basename(v) for k, v in done["outputs"].items()} == expected
    assert sorted(os.listdir(out)) == sorted(expected.values())  # no temporary files left

    ct = sitk.ReadImage(str(case_files["ct"]))
    labels = sitk.ReadImage(str(out / "c1_labels.nii.gz"))
    assert labels.GetSize() == ct.GetSize()
    assert np.allclose(labels.GetOrigin(), ct.GetOrigin(), atol=1e-4)
    assert np.allclose(labels.GetSpacing(), ct.GetSpacing()) and np.allclose(labels.GetDirection(), ct.GetDirection())
    challenge = sitk.ReadImage(str(out / "c1_task1.mha"))
    assert challenge.GetPixelID() == sitk.sitkUInt8
    assert b"CompressedData = True" not in (out / "c1_task1.mha").read_bytes()[:1000]
    assert np.array_equal(sitk.GetArrayFromImage(challenge), sitk.GetArrayFromImage(labels))

    seg = slicerio.read_segmentation(str(out / "c1.seg.nrrd"))
    by_value = {s["labelValue"]: s for s in seg["segments"]}
    assert sorted(by_value) == [1, 2, 3, 4, 5]
    for lab in OUTPUT_LABELS:
        s = by_value[lab.value]
        assert s["name"] == lab.name and s["id"] == lab.segment_id
        assert np.allclose(s["color"], lab.color_float, atol=1e-5)
        assert s["terminology"]["type"] == [lab.code.scheme, lab.code.value, lab.code.meaning]
        assert s["terminology"]["category"] == ["SCT", "123037004", "Anatomical Structure"]
    assert np.array_equal(seg["voxels"].transpose(2, 1, 0), sitk.GetArrayFromImage(labels))
    lps = seg["ijkToLPS"]
    assert np.allclose(lps[:3, 3], ct.GetOrigin(), atol=1e-4)

    report = json.loads((out / "c1_report.json").read_text())
    assert report["model"]["id"] == "tiny-test" and len(report["model"]["sha256"]) == 64
    assert report["device"] == "cpu" and report["reference"] == "ct" and report["tile_overlap"] == 0.25
    voxel_ml = np.prod(ct.GetSpacing()) / 1000
    arr = sitk.GetArrayFromImage(labels)
    for lab in OUTPUT_LABELS:
        assert abs(report["structures"][lab.key]["volume_ml"] - (arr == lab.value).sum() * voxel_ml) < 1e-2
    assert {"prepare", "coarse", "fine", "total"} <= set(report["timings_s"])

    # existing outputs are not overwritten without --overwrite
    before = (out / "c1_report.json").read_bytes()
    assert_one_line_error(_segment(case_files, tiny_bundle, out, "--case", "c1"), "already exist", "--overwrite")
    assert (out / "c1_report.json").read_bytes() == before


def test_the_tile_overlap_reaches_the_run_and_its_report(case_files, tiny_bundle, tmp_path):
    proc = _segment(case_files, tiny_bundle, tmp_path / "o", "--tile-overlap", "0.5", "--progress", "none", "--case", "c")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o" / "c_report.json").read_text())["tile_overlap"] == 0.5


def test_slicer_reads_the_seg_nrrd(case_files, tiny_bundle, tmp_path):
    """The real Slicer segmentation storage node (slicer-core) loads names, colours, terminology."""
    slicer = __import__("slicer")
    proc = _segment(case_files, tiny_bundle, tmp_path, "--structures", "cerebellum", "ventricles", "--case", "s")
    assert proc.returncode == 0, proc.stderr
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "s.seg.nrrd"))
    assert storage.ReadData(node)
    seg = node.GetSegmentation()
    assert [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())] == [
        "BrainBarriers_cerebellum", "BrainBarriers_ventricles"]
    vent = seg.GetSegment("BrainBarriers_ventricles")
    assert vent.GetName() == "Ventricles" and vent.GetLabelValue() == 5
    assert "SCT^35764002^Brain ventricle" in vent.GetTerminology()


def test_segment_batch_resumes_and_survives_a_failing_case(tiny_bundle, tmp_path):
    data = tmp_path / "abcs"
    for case in ("001", "002"):
        write_case(data / case, case, ext=".mha", **CASE_GRID)
    bad = data / "003"
    bad.mkdir()
    (bad / "003_ct.mha").write_bytes(b"not an image")
    for m in ("t1", "t2"):
        (bad / f"003_{m}.mha").write_bytes(b"not an image")
    out = tmp_path / "out"
    proc = run_cli("segment-batch", "--input", str(data), "--model", str(tiny_bundle), "--output", str(out),
                   "--progress", "none")
    assert proc.returncode == 1
    assert "2 done, 0 skipped, 1 failed" in proc.stdout
    assert "003" in proc.stdout and "cannot read" in proc.stdout
    assert (out / "001_report.json").exists() and (out / "002_report.json").exists()
    assert not list(out.glob("003*")) and not list(out.glob(".tmp-*"))
    proc = run_cli("segment-batch", "--input", str(data), "--model", str(tiny_bundle), "--output", str(out),
                   "--progress", "none")
    assert "0 done, 2 skipped, 1 failed" in proc.stdout
    csv_path = tmp_path / "cases.csv"
    csv_path.write_text("case,ct,t1,t2\nx1,abcs/001/001_ct.mha,abcs/001/001_t1.mha,\n")
    proc = run_cli("segment-batch", "--input", str(csv_path), "--model", str(tiny_bundle), "--output", str(out),
                   "--progress", "none", "--no-alignment-check")
    assert proc.returncode == 1 and "accepts: ct+t1+t2" in proc.stdout  # ct+t1 is not a supported subset


def _cancel(case_files, bundle, tmp_path, sig):
    out = tmp_path / f"out-{sig}"
    args = [sys.executable, "-m", "brainbarriers", "segment", "--ct", str(case_files["ct"]), "--t1",
            str(case_files["t1"]), "--t2", str(case_files["t2"]), "--model", str(bundle), "--output", str(out),
            "--progress", "json", "--quality", "full"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    for line in proc.stdout:
        if json.loads(line)["stage"] == "fine" or time.time() > deadline:
            break
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr, out


def test_sigterm_and_sigint_cancel_cleanly(case_files, tiny_bundle, tmp_path):
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        rc, stdout, stderr, out = _cancel(case_files, tiny_bundle, tmp_path, sig)
        assert rc == code, stderr
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1 and "cancelled" in stderr
        assert json.loads(stdout.strip().splitlines()[-1])["stage"] == "error"
        assert list(out.iterdir()) == []  # no partial outputs

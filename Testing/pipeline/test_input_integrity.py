"""Issue 12: damaged files are refused, good files with awkward names are not, runs into one folder do not mix.

The first two tests are the issue's reproductions (a truncated .nii.gz segmented without complaint;
a default case name made from "T1 scan.nii.gz" rejected by its own rule), through the real CLI.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from brainbarriers import cases, io, resources
from brainbarriers.errors import InputError, OutputError
from phantom import make_image
from pipeline_helpers import CASE_GRID, assert_one_line_error, run_cli
from tiny_bundle import write_tiny_bundle


def _segment_args(files: dict, bundle, out, *extra) -> list[str]:
    args = ["segment"]
    for m, p in files.items():
        args += [f"--{m}", str(p)]
    return [*args, "--model", str(bundle), "--output", str(out), "--progress", "none", *extra]


def test_truncated_nii_gz_is_refused(tmp_path, case_files, tiny_bundle):
    """Reproduction 1: the first third of a .nii.gz (an interrupted copy) must not be segmented."""
    whole = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(case_files["ct"])), str(whole))
    cut = tmp_path / "cut_ct.nii.gz"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    proc = run_cli(*_segment_args({"ct": cut, "t1": case_files["t1"], "t2": case_files["t2"]}, tiny_bundle, out))
    assert_one_line_error(proc, "cut_ct.nii.gz", "truncated")
    assert proc.returncode == 2
    assert not out.exists() or list(out.iterdir()) == []


@pytest.fixture(scope="module")
def t1_bundle(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("t1bundle") / "t1only", modalities=("t1",),
                             spacing=(4.0, 4.0, 4.0), coarse_spacing=(8.0, 8.0, 8.0), structures=["ventricles"])


def test_file_name_with_spaces_gets_a_safe_default_case(tmp_path, t1_bundle):
    """Reproduction 2: `--t1 "dir with spaces/T1 scan.nii.gz"` must run; the derived case name is made safe."""
    folder = tmp_path / "dir with spaces"
    folder.mkdir()
    t1 = folder / "T1 scan.nii.gz"
    sitk.WriteImage(make_image("t1", **CASE_GRID), str(t1))
    out = tmp_path / "out"
    proc = run_cli(*_segment_args({"t1": t1}, t1_bundle, out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ["T1_scan.seg.nrrd", "T1_scan_labels.nii.gz", "T1_scan_report.json"]
    report = json.loads((out / "T1_scan_report.json").read_text())
    assert report["case"] == "T1_scan" and report["inputs"]["t1"] == str(t1.resolve())


@pytest.mark.parametrize("name, case", [
    ("T1 scan.nii.gz", "T1_scan"),
    ("Müller, Jürgen (T1).nrrd", "Muller_Jurgen_T1"),
    ("脑 scan.mha", "scan"),
    ("脑.nii", "case"),
    ("..hidden.v2.nii.gz", "hidden.v2"),
    ("a.b.c.mhd", "a.b.c"),
    ("-x-.nrrd", "x-"),
    ("001_ct.nii.gz", "001_ct"),
    ("CT.SEG.NRRD", "CT"),
])
def test_derived_case_names_are_always_valid(name, case):
    derived = io.case_name(Path("/some dir") / name)
    assert derived == case
    assert cases.check_case_name(derived) == derived


def test_explicit_case_is_validated_with_the_rule(tmp_path, case_files, tiny_bundle):
    proc = run_cli(*_segment_args(case_files, tiny_bundle, tmp_path / "o", "--case", "my case"))
    assert_one_line_error(proc, "'my case'", "letters, digits", "start with a letter or digit")
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []
    with pytest.raises(InputError, match="at most"):
        cases.check_case_name("x" * 200)


def test_batch_folder_names_are_made_safe(tmp_path):
    folder = tmp_path / "data" / "patient 7"
    folder.mkdir(parents=True)
    sitk.WriteImage(make_image("ct", size=(8, 8, 8)), str(folder / "patient 7_ct.nrrd"))
    found = cases.find_cases(tmp_path / "data")
    assert [(c.case, sorted(c.inputs)) for c in found] == [("patient_7", ["ct"])]


# --- resource guard ------------------------------------------------------------------------------


def test_absurd_header_dimensions_never_allocate(tmp_path):
    img = make_image("ct", size=(16, 16, 16))
    path = tmp_path / "huge.nrrd"
    sitk.WriteImage(img, str(path))
    text = path.read_bytes().replace(b"sizes: 16 16 16", b"sizes: 100000 100000 100000")
    path.write_bytes(text)
    with pytest.raises(InputError, match="claims .* voxels"):
        io.read_image(path, "ct")


def test_memory_guard_refuses_with_the_estimate(tmp_path, case_files, tiny_bundle, monkeypatch):
    from brainbarriers.bundles import load_bundle

    bundle = load_bundle(tiny_bundle)
    need = resources.estimate_run_bytes(case_files, bundle)
    assert need > 0
    monkeypatch.setenv("BRAINBARRIERS_MEMORY_LIMIT_MB", "1")
    with pytest.raises(InputError, match=r"needs about .* memory"):
        resources.check_memory(case_files, bundle)
    out = tmp_path / "o"
    proc = run_cli(*_segment_args(case_files, tiny_bundle, out), env={"BRAINBARRIERS_MEMORY_LIMIT_MB": "1"})
    assert_one_line_error(proc, "needs about", "MB")
    assert not out.exists() or list(out.iterdir()) == []
    monkeypatch.setenv("BRAINBARRIERS_MEMORY_LIMIT_MB", str(10 * need // 2**20 + 10))
    resources.check_memory(case_files, bundle)  # enough: no error


# --- concurrency ---------------------------------------------------------------------------------


def test_second_run_into_the_same_case_is_refused_while_the_first_holds_the_lock(tmp_path, case_files, tiny_bundle):
    out = tmp_path / "out"
    out.mkdir()
    with cases.case_lock(out, "case"):
        proc = run_cli(*_segment_args(case_files, tiny_bundle, out, "--case", "case"))
        assert_one_line_error(proc, "another brainbarriers run", "case")
        with pytest.raises(OutputError, match="another brainbarriers run"):
            with cases.case_lock(out, "case"):
                pass
        with cases.case_lock(out, "other"):  # another case in the same folder is not blocked
            pass
    assert list(out.iterdir()) == []  # the lock file goes with the lock
    with cases.case_lock(out, "case"):
        pass


def test_two_concurrent_runs_leave_one_complete_result(tmp_path, case_files, tiny_bundle):
    import subprocess
    import sys

    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "brainbarriers", *_segment_args(case_files, tiny_bundle, out, "--case", "c")]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0, results
    if codes[1] != 0:  # the loser ran into the lock or found the winner's outputs
        err = next(e for code, e in results if code != 0)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "another brainbarriers run" in err or "already exist" in err, err
    assert sorted(os.listdir(out)) == ["c.seg.nrrd", "c_labels.nii.gz", "c_report.json"]
    report = json.loads((out / "c_report.json").read_text())
    labels = sitk.ReadImage(str(out / "c_labels.nii.gz"))
    counts = np.bincount(sitk.GetArrayViewFromImage(labels).ravel(), minlength=6)
    assert [report["structures"][k]["voxels"] for k in report["structures"]] == \
        [int(counts[v["label"]]) for v in report["structures"].values()]


def test_lock_refuses_a_second_holder_in_the_same_process(tmp_path):
    """flock locks belong to open files, not processes: another thread (a batch, the module) is refused too."""
    out = tmp_path / "o"
    out.mkdir()
    errors = []

    def second():
        try:
            with cases.case_lock(out, "x"):
                pass
        except OutputError as exc:
            errors.append(str(exc))

    with cases.case_lock(out, "x"):
        t = threading.Thread(target=second)
        t.start()
        t.join(10)
    assert len(errors) == 1 and "another brainbarriers run" in errors[0]


def test_one_reader_and_one_discovery_serve_training_too(tmp_path):
    """Training's data sets: flat <case>_<suffix> files with label maps, read through the same reader."""
    flat = tmp_path / "flat"
    flat.mkdir()
    ct = make_image("ct", size=(10, 12, 8))
    sitk.WriteImage(ct, str(flat / "007_ct.mha"))
    lab = sitk.Cast(sitk.BinaryThreshold(ct, 0, 5000, 2, 0), sitk.sitkUInt8)
    sitk.WriteImage(lab, str(flat / "007_labelmap_task1.nii.gz"))
    found = cases.find_cases(flat, keys=("ct", "t1", "t2", "label"), suffixes={"label": "labelmap_task1"})
    assert [(c.case, sorted(c.inputs)) for c in found] == [("007", ["ct", "label"])]
    label = io.read_image(found[0].inputs["label"], "label")
    assert label.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(lab))
    data = found[0].inputs["label"].read_bytes()
    found[0].inputs["label"].write_bytes(data[:-9])  # the gzip trailer (CRC-32 and length) cut off
    with pytest.raises(InputError, match="truncated"):
        io.read_image(found[0].inputs["label"], "label")


def test_lock_without_flock_uses_an_exclusive_file(tmp_path, monkeypatch):
    """Where fcntl is missing (Windows) the lock is an exclusively created file, with a stale-lock hint."""
    from brainbarriers import output_lock

    monkeypatch.setattr(output_lock, "fcntl", None)
    with output_lock.case_lock(tmp_path, "w"):
        assert (tmp_path / ".w.lock").read_text().startswith("pid ")
        with pytest.raises(OutputError, match="if no run is active, delete"):
            with output_lock.case_lock(tmp_path, "w"):
                pass
    assert list(tmp_path.iterdir()) == []
